"""CSL title generation (roformer_jax.seq2seq.csl): the reader over files in the official layout, and the
bert4keras example's metrics against the example's own evaluation with the real `rouge` 1.0.1 and NLTK 3.9.1
packages, on hand cases and random pairs ('.', spaces, upper case and repeated characters included)."""

import random
import re

import pytest
from nltk.translate.bleu_score import SmoothingFunction
from nltk.translate.bleu_score import sentence_bleu as nltk_sentence_bleu
from rouge import Rouge

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


def example_evaluate(predictions, titles):
  """bert4keras's `Evaluator.evaluate` (examples/task_seq2seq_autotitle_csl.py) with the real `rouge` and NLTK,
  its argument order and averaging kept: hyps = the prediction, refs = the title; / all samples."""
  rouge, smooth = Rouge(), SmoothingFunction().method1
  total = {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0, "bleu": 0.0}
  for title, pred in zip(titles, predictions):
    title, pred_title = " ".join(title).lower(), " ".join(pred).lower()
    if pred_title.strip():
      scores = rouge.get_scores(hyps=pred_title, refs=title)
      for m in ("rouge-1", "rouge-2", "rouge-l"):
        total[m] += scores[0][m]["f"]
      total["bleu"] += nltk_sentence_bleu(references=[title.split(" ")], hypothesis=pred_title.split(" "),
                                          smoothing_function=smooth)
  return {k: v / len(titles) for k, v in total.items()}


HAND_CASES = [
    ("文本分类", "分类文本分类"),        # repeated characters, longer prediction
    ("中文分词方法研究", "研究"),        # brevity penalty, no 3-/4-grams
    ("文本分类", "文本分类"),            # identical
    ("文", "文"), ("文", "本"), ("文", "文文文"), ("文本", "文"),  # single-character titles / predictions
    ("啊啊啊啊", "啊啊"), ("abab", "baba"),
    ("基于SVM的文本分类", "基于svm的文本分类"),  # the example lower-cases both sides
    ("BERT模型", "Bert模型"), ("a.b.c", "a b.c"),  # '.' splits rouge's sentences; spaces
]


@pytest.mark.parametrize("title, pred", HAND_CASES)
def test_metrics_equal_rouge_and_nltk_on_hand_cases(title, pred):
  want = example_evaluate([pred], [title])
  assert csl.title_scores([pred], [title]) == pytest.approx(want, rel=1e-12, abs=1e-12)
  ref, hyp = " ".join(title).lower(), " ".join(pred).lower()
  scores = Rouge().get_scores(hyps=hyp, refs=ref)[0]
  assert csl.rouge_n(hyp, ref, 1) == pytest.approx(scores["rouge-1"]["f"], rel=1e-12, abs=1e-12)
  assert csl.rouge_n(hyp, ref, 2) == pytest.approx(scores["rouge-2"]["f"], rel=1e-12, abs=1e-12)
  assert csl.rouge_l(hyp, ref) == pytest.approx(scores["rouge-l"]["f"], rel=1e-12, abs=1e-12)


def test_metrics_equal_rouge_and_nltk_on_random_pairs():
  rng = random.Random(0)
  alphabet = "文本分类中研究方法aAbB. "
  titles, preds = [], []
  for _ in range(400):
    title = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
    if not title.replace(".", ""):  # a title of '.' only has no rouge sentence (the package raises)
      title += "文"
    pred = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
    if pred and not pred.replace(".", ""):  # likewise a prediction of '.' only (the example would raise too)
      pred = ""
    titles.append(title)
    preds.append(pred)
    assert csl.title_scores([pred], [title]) == pytest.approx(example_evaluate([pred], [title]), rel=1e-12,
                                                              abs=1e-12), (title, pred)
  assert csl.title_scores(preds, titles) == pytest.approx(example_evaluate(preds, titles), rel=1e-12)


def test_title_scores_average_over_all_samples_empty_scores_zero():
  preds, titles = ["文本分类", "", " "], ["文本分类", "中文分词", "分词"]
  got = csl.title_scores(preds, titles)
  assert got == pytest.approx(example_evaluate(preds, titles), rel=1e-12)
  assert got == pytest.approx({"rouge-1": 1 / 3, "rouge-2": 1 / 3, "rouge-l": 1 / 3, "bleu": 1 / 3}, abs=1e-7)
  assert csl.sentence_bleu(["a", "b"], ["c", "d"]) == 0.0  # no unigram in common
  with pytest.raises(ValueError, match="1 predictions for 2 titles"):
    csl.title_scores(["a"], ["a", "b"])
