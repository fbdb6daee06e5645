"""CSL title generation (abstract -> title), as bert4keras's `examples/task_seq2seq_autotitle_csl.py`: the
files and the metrics (finetune-spec §e.2). Pure: nothing runs at import, no dependency beyond the stdlib.

Files: a folder with `train.tsv`, `val.tsv` and `test.tsv` (CLGE's CSL, the example's `/root/csl/*.tsv`),
one `title<TAB>abstract` a line. A line without exactly one tab, or with an empty field, raises DataError
naming the file and line.

Metrics, per sample, averaged over all samples (an empty prediction scores 0 on every metric, as the example
skips it but still divides by the total). Both strings are cut into characters joined by spaces and then
lower-cased (the example's `' '.join(title).lower()`; its predictions come from a lower-casing tokenizer, so an
upper-case latin letter in a title would otherwise never match), then scored as

  * `rouge` 1.0.1's `Rouge().get_scores(hyps=pred, refs=title)[0][m]['f']` for m = rouge-1, rouge-2, rouge-l:
    each string split into "sentences" at '.', whitespace collapsed; n-grams and LCS words are counted as
    *sets* (the package's default `exclusive=True`): ROUGE-N P = |H ∩ R| / |H|, R = |H ∩ R| / |R| over the
    distinct n-grams; ROUGE-L is the summary-level union LCS over the distinct words, with the package's
    backtracking; F = 2PR / (P + R + 1e-8).
  * NLTK's `sentence_bleu([title.split(' ')], pred.split(' '), smoothing_function=SmoothingFunction().method1)`:
    4-gram BLEU, uniform weights, clipped counts, brevity penalty against the reference length, 0 when no
    unigram matches, and method1 (a zero n-gram count becomes 0.1 / that order's n-gram total).
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from collections import Counter
from typing import Sequence, Union

PathLike = Union[str, os.PathLike]
SPLIT_FILES = {"train": "train.tsv", "dev": "val.tsv", "test": "test.tsv"}


@dataclasses.dataclass(frozen=True)
class TitleExample:
  title: str
  abstract: str
  where: str = ""


def read_csl_tsv(path: PathLike) -> list[TitleExample]:
  """One split: `title<TAB>abstract` lines (blank lines skipped)."""
  from roformer_jax.data.jsonl import DataError, text_lines
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: CSL split not found (expected title<TAB>abstract lines)")
  out = []
  for n, line in text_lines(path):  # not strip()ped: a leading tab is an empty title
    where = f"{path}:{n}"
    if not line.strip():
      continue
    fields = line.split("\t")
    if len(fields) != 2:
      raise DataError(f"{where}: expected title<TAB>abstract, found {len(fields)} tab-separated fields")
    title, abstract = (x.strip() for x in fields)
    if not title or not abstract:
      raise DataError(f"{where}: empty {'title' if not title else 'abstract'}")
    out.append(TitleExample(title, abstract, where))
  return out


def load_csl(folder: PathLike) -> dict[str, list[TitleExample]]:
  """{train, dev, test: examples} of the user's CSL folder (train.tsv, val.tsv, test.tsv)."""
  folder = pathlib.Path(folder).expanduser()
  return {split: read_csl_tsv(folder / name) for split, name in SPLIT_FILES.items()}


# ----------------------------------------------------------------------------------------------
# The example's metrics
# ----------------------------------------------------------------------------------------------
def _rouge_words(text: str) -> tuple[list[list[str]], list[str]]:
  """`rouge`'s preprocessing: sentences at '.', whitespace collapsed; (sentences' words, all words)."""
  sentences = [" ".join(s.split()) for s in text.split(".") if len(s) > 0]
  words = [s.split(" ") for s in sentences]
  return words, [w for ws in words for w in ws]


def _ngram_set(words: list[str], n: int) -> set[tuple[str, ...]]:
  return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def _f(p: float, r: float) -> float:
  return 2.0 * ((p * r) / (p + r + 1e-8))


def rouge_n(hyp: str, ref: str, n: int) -> float:
  """ROUGE-N F of two space-separated strings (the `rouge` package's, see the module docstring)."""
  h, r = _ngram_set(_rouge_words(hyp)[1], n), _ngram_set(_rouge_words(ref)[1], n)
  overlap = len(h & r)
  return _f(overlap / len(h) if h else 0.0, overlap / len(r) if r else 0.0)


def _lcs_words(x: list[str], y: list[str]) -> set[str]:
  """The words of one longest common subsequence of x and y, backtracked as `rouge` does (a match first, then
  up when strictly longer there, else left)."""
  table = [[0] * (len(y) + 1) for _ in range(len(x) + 1)]
  for i in range(1, len(x) + 1):
    for j in range(1, len(y) + 1):
      table[i][j] = table[i - 1][j - 1] + 1 if x[i - 1] == y[j - 1] else max(table[i - 1][j], table[i][j - 1])
  out, i, j = set(), len(x), len(y)
  while i > 0 and j > 0:
    if x[i - 1] == y[j - 1]:
      out.add(x[i - 1])
      i, j = i - 1, j - 1
    elif table[i - 1][j] > table[i][j - 1]:
      i -= 1
    else:
      j -= 1
  return out


def rouge_l(hyp: str, ref: str) -> float:
  """Summary-level ROUGE-L F over distinct words (the `rouge` package's)."""
  hyp_sentences, hyp_words = _rouge_words(hyp)
  ref_sentences, ref_words = _rouge_words(ref)
  union: set[str] = set()
  for r in ref_sentences:
    for h in hyp_sentences:
      union |= _lcs_words(r, h)
  m, n = len(set(ref_words)), len(set(hyp_words))
  return _f(len(union) / n, len(union) / m)


def sentence_bleu(reference: Sequence[str], hypothesis: Sequence[str], max_n: int = 4) -> float:
  """NLTK's `sentence_bleu([reference], hypothesis, smoothing_function=SmoothingFunction().method1)`."""
  numerators, denominators = [], []
  for n in range(1, max_n + 1):
    hyp = Counter(tuple(hypothesis[i:i + n]) for i in range(len(hypothesis) - n + 1))
    ref = Counter(tuple(reference[i:i + n]) for i in range(len(reference) - n + 1))
    numerators.append(sum(min(c, ref[g]) for g, c in hyp.items()))
    denominators.append(max(1, sum(hyp.values())))
  if numerators[0] == 0:
    return 0.0
  hyp_len, ref_len = len(hypothesis), len(reference)
  bp = 1.0 if hyp_len > ref_len else (0.0 if hyp_len == 0 else math.exp(1 - ref_len / hyp_len))
  logs = [math.log((num if num else 0.1) / den) for num, den in zip(numerators, denominators)]
  return bp * math.exp(sum(logs) / max_n)


def title_scores(predictions: Sequence[str], titles: Sequence[str]) -> dict[str, float]:
  """{"rouge-1", "rouge-2", "rouge-l", "bleu"}: the example's `evaluate` over (predicted, reference) titles."""
  if len(predictions) != len(titles):
    raise ValueError(f"{len(predictions)} predictions for {len(titles)} titles")
  total = {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0, "bleu": 0.0}
  for pred, title in zip(predictions, titles):
    ref, hyp = " ".join(title).lower(), " ".join(pred).lower()  # joined, then lowered, as the example does
    if not hyp.strip():
      continue
    total["rouge-1"] += rouge_n(hyp, ref, 1)
    total["rouge-2"] += rouge_n(hyp, ref, 2)
    total["rouge-l"] += rouge_l(hyp, ref)
    total["bleu"] += sentence_bleu(ref.split(" "), hyp.split(" "))
  return {k: v / len(titles) if titles else 0.0 for k, v in total.items()}
