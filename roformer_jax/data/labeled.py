"""Labelled texts for classification: `text<TAB>label` lines (.tsv, .txt) or JSON lines (.jsonl).

A malformed line raises `DataError` naming the file and its 1-based line; blank lines are skipped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple, Sequence

from roformer_jax.data.jsonl import text_lines
from roformer_jax.data.sources import DataError

SUFFIXES = (".tsv", ".txt", ".jsonl")


class Example(NamedTuple):
  text: str
  label: str
  line: int  # 1-based line in its file, for messages


def read_labeled(path: str | os.PathLike, *, text_field: str = "text", label_field: str = "label") -> list[Example]:
  """Every (text, label) of `path`. TSV: `text<TAB>label`, exactly one tab (a third column would otherwise
  pass as the label, silently adding a class; texts that hold tabs go in .jsonl).
  JSON lines: an object with string `text_field` and `label_field` (a number label is read as its string)."""
  path = Path(path)
  if path.is_dir():
    raise IsADirectoryError(f"{path}: a folder, not a data file")
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such data file")
  if path.suffix not in SUFFIXES:
    raise DataError(f"{path}: unknown data format {path.suffix!r}; expected one of {SUFFIXES}")
  out = []
  for number, line in text_lines(path):
    if not line.strip():
      continue
    text, label = _parse_json(line, text_field, label_field) if path.suffix == ".jsonl" else _parse_tsv(line)
    if text is None:
      raise DataError(f"{path}:{number}: {label}")
    out.append(Example(text, label, number))
  if not out:
    raise DataError(f"{path}: no examples (the file is empty or blank)")
  return out


def _parse_tsv(line: str) -> tuple[str | None, str]:
  tabs = line.count("\t")
  if tabs != 1:
    return None, ("expected 'text<TAB>label', found no tab" if not tabs else
                  f"expected 'text<TAB>label', found {tabs} tabs ({tabs + 1} columns; texts with tabs go in .jsonl)")
  text, label = line.split("\t")
  if not label.strip():
    return None, "empty label after the tab"
  if not text.strip():
    return None, "empty text"
  return text, label.strip()


def _parse_json(line: str, text_field: str, label_field: str) -> tuple[str | None, str]:
  try:
    obj = json.loads(line)
  except json.JSONDecodeError as e:
    return None, f"invalid JSON ({e.msg} at column {e.colno})"
  if not isinstance(obj, dict):
    return None, f"expected a JSON object, found {type(obj).__name__}"
  for field in (text_field, label_field):
    if field not in obj:
      return None, f"no field {field!r} (found {sorted(obj)})"
  text, label = obj[text_field], obj[label_field]
  if not isinstance(text, str) or not text.strip():
    return None, f"field {text_field!r} is not a non-empty string"
  if isinstance(label, bool) or not isinstance(label, (str, int)):
    return None, f"field {label_field!r} is {type(label).__name__}, not a string or integer"
  return text, str(label)


def label_ids(examples: Sequence[Example], labels: Sequence[str], path: str | os.PathLike,
              source: str = "") -> list[int]:
  """Each example's index in `labels`; a label outside them is named with its file and line, and with
  `source`, where the labels came from (e.g. the training file's lines that introduced each)."""
  index = {label: i for i, label in enumerate(labels)}
  out = []
  for e in examples:
    if e.label not in index:
      raise DataError(f"{path}:{e.line}: label {e.label!r} is not one of {list(labels)}"
                      + (f" ({source})" if source else ""))
    out.append(index[e.label])
  return out


def first_lines(examples: Sequence[Example]) -> dict[str, int]:
  """label -> the line that first has it: where a label read from a file came from."""
  out: dict[str, int] = {}
  for e in examples:
    out.setdefault(e.label, e.line)
  return out
