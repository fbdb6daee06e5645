"""Scores for CMRC2018, C3 and CHID: the official CMRC2018 EM/F1, the reference's strict CMRC metric, C3's joint
choice, CHID's per-passage assignment (host-side numpy).

CMRC2018 official (ymcui/cmrc2018 `cmrc2018_evaluate.py` v5): text lower-cased and stripped; EM = 1 if the
prediction equals some answer after removing the punctuation characters `PUNCTUATION`; F1 = max over answers
of the F1 of the longest common *contiguous* run of segments, segments being single CJK characters
(U+4E00..U+9FA5) and the word tokens of the runs between them, punctuation removed. Scores are percentages over
all questions of the reference file (an unanswered question scores 0). The official script tokenises the
non-CJK runs with nltk.word_tokenize; `word_tokenize` here is nltk's `NLTKWordTokenizer` (the Treebank rules
word_tokenize applies; nltk 3.9, Apache 2.0) without nltk: split at whitespace, a few symbols split off
(quotes, brackets, ;@#$%&?!*, "," and ":" before a non-digit, "..", a final "."), every other symbol kept in
its word ("30°c", "1943—1945", "3×4", "……" are one segment each). nltk first cuts the run into sentences
(punkt, model data): not done here, so "a. b" inside one run keeps "a." whole. The official list holds
"……" (two characters), which never matches one character: kept, as it changes nothing.

The reference's own CMRC metric (`Evaluator.evaluate`, "strict"): per question, the window whose best cell
scores highest; right iff its (start, end) equals that window's label (a window without the answer: (0, 0)).
"""

from __future__ import annotations

import re
from itertools import groupby
from typing import Iterable, Sequence

import numpy as np

PUNCTUATION = frozenset(['-', ':', '_', '*', '^', '/', '\\', '~', '`', '+', '=', '，', '。', '：', '？', '！', '“', '”',
                         '；', '’', '《', '》', '……', '·', '、', '「', '」', '（', '）', '－', '～', '『', '』'])
_CJK = re.compile(r"[\u4e00-\u9fa5]")


def _sub(rules):
  return [(re.compile(p), r) for p, r in rules]


# nltk.tokenize.destructive.NLTKWordTokenizer (nltk 3.9.1), in order: (regex, replacement) rules, then split.
_STARTING_QUOTES = _sub([("([«“‘„]|[`]+)", r" \1 "), (r'^\"', r"``"), (r"(``)", r" \1 "),
                         (r"([ \(\[{<])(\"|\'{2})", r"\1 `` "), (r"(?i)(\')(?!re|ve|ll|m|t|s|d|n)(\w)\b", r"\1 \2")])
_PUNCTUATION = _sub([(r'([^\.])(\.)([\]\)}>"\'' "»”’ " r"]*)\s*$", r"\1 \2 \3 "), (r"([:,])([^\d])", r" \1 \2"),
                     (r"([:,])$", r" \1 "), (r"\.{2,}", r" \g<0> "), (r"[;@#$%&]", r" \g<0> "),
                     (r'([^\.])(\.)([\]\)}>"\']*)\s*$', r"\1 \2\3 "), (r"[?!]", r" \g<0> "), (r"([^'])' ", r"\1 ' "),
                     (r"[*]", r" \g<0> "), (r"[\]\[\(\)\{\}\<\>]", r" \g<0> "), (r"--", r" -- ")])
_ENDING_QUOTES = _sub([("([»”’])", r" \1 "), (r"''", " '' "), (r'"', " '' "), (r"\s+", " "),
                       (r"([^' ])('[sS]|'[mM]|'[dD]|') ", r"\1 \2 "),
                       (r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) ", r"\1 \2 ")])
_CONTRACTIONS = _sub([(p, r" \1 \2 ") for p in (
    r"(?i)\b(can)(?#X)(not)\b", r"(?i)\b(d)(?#X)('ye)\b", r"(?i)\b(gim)(?#X)(me)\b", r"(?i)\b(gon)(?#X)(na)\b",
    r"(?i)\b(got)(?#X)(ta)\b", r"(?i)\b(lem)(?#X)(me)\b", r"(?i)\b(more)(?#X)('n)\b", r"(?i)\b(wan)(?#X)(na)(?=\s)",
    r"(?i) ('t)(?#X)(is)\b", r"(?i) ('t)(?#X)(was)\b")])


def word_tokenize(text: str) -> list[str]:
  """nltk's NLTKWordTokenizer (what nltk.word_tokenize applies to each sentence); see the module doc."""
  for rules in (_STARTING_QUOTES, _PUNCTUATION):
    for regex, repl in rules:
      text = regex.sub(repl, text)
  text = " " + text + " "
  for rules in (_ENDING_QUOTES, _CONTRACTIONS):
    for regex, repl in rules:
      text = regex.sub(repl, text)
  return text.split()


def mixed_segmentation(text: str, remove_punctuation: bool = False) -> list[str]:
  """The official script's segments: each CJK character alone, word tokens for the runs between them."""
  text = str(text).lower().strip()
  out, run = [], ""
  for ch in text:
    if remove_punctuation and ch in PUNCTUATION:
      continue
    if _CJK.match(ch) or ch in PUNCTUATION:
      if run:
        out.extend(word_tokenize(run))
        run = ""
      out.append(ch)
    else:
      run += ch
  if run:
    out.extend(word_tokenize(run))
  return out


def strip_punctuation(text: str) -> str:
  return "".join(ch for ch in str(text).lower().strip() if ch not in PUNCTUATION)


def longest_common_run(a: Sequence[str], b: Sequence[str]) -> int:
  """Length of the longest common contiguous subsequence (the official `find_lcs`)."""
  best, prev = 0, [0] * (len(b) + 1)
  for x in a:
    cur = [0] * (len(b) + 1)
    for j, y in enumerate(b):
      if x == y:
        cur[j + 1] = prev[j] + 1
        best = max(best, cur[j + 1])
    prev = cur
  return best


def cmrc_f1(answers: Iterable[str], prediction: str) -> float:
  scores = [0.0]
  pred = mixed_segmentation(prediction, remove_punctuation=True)
  for ans in answers:
    gold = mixed_segmentation(ans, remove_punctuation=True)
    n = longest_common_run(gold, pred)
    if n:
      p, r = n / len(pred), n / len(gold)
      scores.append(2 * p * r / (p + r))
  return max(scores)


def cmrc_em(answers: Iterable[str], prediction: str) -> float:
  pred = strip_punctuation(prediction)
  return float(any(strip_punctuation(a) == pred for a in answers))


def cmrc_official(gold: dict[str, Sequence[str]], predictions: dict[str, str]) -> dict[str, float]:
  """{em, f1, average (percent), total, skipped} over every question of `gold` (qid -> answer texts)."""
  em = f1 = 0.0
  skipped = 0
  for qid, answers in gold.items():
    if qid not in predictions:
      skipped += 1
      continue
    f1 += cmrc_f1(answers, str(predictions[qid]))
    em += cmrc_em(answers, str(predictions[qid]))
  total = max(len(gold), 1)
  em, f1 = 100.0 * em / total, 100.0 * f1 / total
  return {"em": em, "f1": f1, "average": (em + f1) / 2, "total": len(gold), "skipped": skipped}


def best_cells(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per window [N, L, L] span scores (masked cells very negative): (start, end) [N, 2] of the best cell with
  row and column 0 ([CLS]) excluded, and its score [N] (the reference's `y_pred[:, 0] -= inf` ...)."""
  s = np.array(scores, np.float64, copy=True)
  s[:, 0, :] = -np.inf
  s[:, :, 0] = -np.inf
  flat = s.reshape(len(s), -1)
  best = flat.argmax(1)
  n = s.shape[-1]
  return np.stack([best // n, best % n], 1), flat[np.arange(len(s)), best]


def pick_windows(qids: Sequence[str], window_scores: np.ndarray) -> dict[str, int]:
  """qid -> the index of its highest-scoring window (windows of a question are consecutive, as the
  reference's groupby)."""
  out, n = {}, 0
  for qid, group in groupby(qids):
    g = len(list(group))
    out[qid] = n + int(np.argmax(window_scores[n:n + g]))
    n += g
  return out


def cmrc_strict(qids: Sequence[str], spans: np.ndarray, window_scores: np.ndarray, labels: np.ndarray) -> float:
  """The reference's dev metric: the fraction of questions whose best window's (start, end) is its label."""
  picked = pick_windows(qids, window_scores)
  right = sum(bool((spans[i] == labels[i]).all()) for i in picked.values())
  return right / max(len(picked), 1)


def choose(scores: np.ndarray, num_choices: int) -> tuple[np.ndarray, np.ndarray]:
  """C3: per-choice scores [N * num_choices] (question-major) -> (choice [N], softmax over choices [N, C])."""
  s = np.asarray(scores, np.float64).reshape(-1, num_choices)
  p = np.exp(s - s.max(1, keepdims=True))
  return s.argmax(1), p / p.sum(1, keepdims=True)


def assign_idioms(passages: Sequence[int], logits: np.ndarray) -> np.ndarray:
  """CHID: per blank [N, candidates] logits -> the candidate of each blank, each candidate used at most once per
  passage (Hungarian method on -logits, scipy `linear_sum_assignment`, as the reference). A passage with more
  blanks than candidates (not in CHID) gives its unassigned blanks their argmax."""
  from scipy.optimize import linear_sum_assignment
  logits = np.asarray(logits, np.float64)
  out = logits.argmax(1)
  groups: dict[int, list[int]] = {}
  for i, p in enumerate(passages):
    groups.setdefault(p, []).append(i)
  for rows in groups.values():
    r, c = linear_sum_assignment(-logits[rows])
    out[np.asarray(rows)[r]] = c
  return out
