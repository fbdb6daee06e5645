"""Fixed dataset splits and atomically written prepared folders, shared by the dataset modules.

Light on purpose (numpy and the standard library): importing it loads neither JAX nor tensorflow-datasets.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
import unicodedata
from typing import Callable

import numpy as np

SPLITS = ("train", "dev", "test")


def dedup_key(text: str) -> str:
  """What two texts share when they differ only in punctuation, symbols, spacing, full/half width or case
  ("早餐一般" / "早餐一般。", "谢谢!" / "谢谢！", "（编者）" / "——编者"): NFKC, casefolded, with every
  punctuation (P*), symbol (S*), separator (Z*), control (Cc) and format (Cf) character removed. Datasets keep
  one text per key before splitting, so that no test text is a training text spelt differently. A text of
  punctuation alone keys to ""."""
  return "".join(c for c in unicodedata.normalize("NFKC", text).casefold()
                 if unicodedata.category(c)[0] not in "PSZ" and unicodedata.category(c) not in ("Cc", "Cf"))


def split_indices(num_items: int, seed: int, dev_fraction: float, test_fraction: float) -> dict[str, np.ndarray]:
  """{split: sorted item indices}: a seeded permutation of range(num_items) cut into test, dev (rounded
  fractions) and train, in that order. Items are the unit that must not straddle splits (paragraphs)."""
  order = np.random.default_rng(seed).permutation(num_items)
  n_test, n_dev = round(test_fraction * num_items), round(dev_fraction * num_items)
  parts = dict(test=order[:n_test], dev=order[n_test:n_test + n_dev], train=order[n_test + n_dev:])
  return {s: np.sort(parts[s]) for s in SPLITS}


def write_folder_atomically(out: pathlib.Path, write: Callable[[pathlib.Path], None],
                            done: str = "meta.json") -> pathlib.Path:
  """Runs `write(tmp)` into a temporary sibling of `out`, then renames it to `out`. A folder whose `done` file
  exists is complete and kept as it is (a concurrent writer that finished first wins). Returns `out`."""
  out.parent.mkdir(parents=True, exist_ok=True)
  # A dot-name beside the target: same filesystem, so the rename is atomic; a crash leaves only `.<key>.tmp-*`.
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
  try:
    write(tmp)
    try:
      os.rename(tmp, out)
    except OSError:
      if not (out / done).is_file():
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return out
