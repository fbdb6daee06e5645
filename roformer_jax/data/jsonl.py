"""JSON-lines files (and JSON lists): read with errors that name the file and line, write atomically.

The datasets fine-tuning reads (CLUE and the like) are one JSON object per line; a few (CBLUE's
CMeEE) are one JSON list of objects, which `read_json_list` reads object by object with the line
each starts on. A line that cannot be
used raises `DataError("path:line: why")`, so a user can open the file at the bad line; the field
helpers say which field is missing or has the wrong type. `write_jsonl` writes a temp file in the
same folder and renames it, so a reader (or a crash) never sees half a file.

Every reader of a user's text file goes through `raw_lines` (streamed) or `read_text` (whole): a UTF-8
byte-order mark at the start is dropped (Windows editors write one), and lines end at \\n, \\r\\n or a lone
\\r (old Mac), as Python's text mode counts them, so `path:line` is the line an editor shows.
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from typing import Any, Iterable, Iterator, Union

from roformer_jax.config import DataError  # the one class; modules that import it from here keep working

PathLike = Union[str, os.PathLike]
BOM = b"\xef\xbb\xbf"


def raw_lines(path: PathLike) -> Iterator[tuple[int, bytes]]:
  """(1-based line number, bytes without the line ending) of every line of `path`, streamed; a leading UTF-8
  BOM is dropped. Bytes, not text, so each caller reports invalid UTF-8 with its own line number."""
  # latin-1 maps bytes to characters one to one, so text mode's universal newlines split the raw bytes (a UTF-8
  # multi-byte sequence never holds \r or \n) and encode() gives them back unchanged.
  with open(path, encoding="latin-1", newline=None) as f:
    for n, line in enumerate(f, 1):
      raw = line.encode("latin-1")
      raw = raw[:-1] if raw.endswith(b"\n") else raw
      yield n, (raw[len(BOM):] if n == 1 and raw.startswith(BOM) else raw)


def text_lines(path: PathLike) -> Iterator[tuple[int, str]]:
  """(1-based line number, text) of every line of `path`, as `raw_lines` splits them; invalid UTF-8 raises
  DataError naming the file and line."""
  for n, raw in raw_lines(path):
    try:
      yield n, raw.decode("utf-8")
    except UnicodeDecodeError as e:
      raise DataError(f"{path}:{n}: invalid UTF-8 at byte {e.start}") from None


def read_text(path: PathLike) -> str:
  """The whole of `path` as text: UTF-8 with an optional BOM, line endings made \\n (so a JSON decoder's line
  numbers are the file's); invalid UTF-8 raises DataError naming the file and line."""
  raw = pathlib.Path(path).read_bytes()
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    head = raw[:e.start]
    line = head.count(b"\n") + head.count(b"\r") - head.count(b"\r\n") + 1
    raise DataError(f"{path}:{line}: invalid UTF-8 at byte {e.start}") from None
  text = text[1:] if text.startswith("\ufeff") else text
  return text.replace("\r\n", "\n").replace("\r", "\n")


def read_jsonl(path: PathLike) -> Iterator[tuple[int, dict]]:
  """(1-based line number, object) for every non-blank line of `path`.

  Raises DataError naming the file and line for invalid UTF-8, invalid JSON or a value that is not
  an object, and FileNotFoundError naming the file if it does not exist.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such file")
  for n, line in text_lines(path):
    where = f"{path}:{n}"
    if not line.strip():
      continue
    try:
      obj = json.loads(line)
    except json.JSONDecodeError as e:
      raise DataError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
      raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    yield n, obj


def read_json_list(path: PathLike, element: type = dict) -> Iterator[tuple[int, Any]]:
  """(1-based line where it starts, element) for every element of a file holding one JSON list of objects
  (or of `element`s: C3's files are lists of lists).

  Raises DataError naming the file and line for invalid UTF-8, invalid JSON, a file that is not a list
  or an element that is not an object (`element`).
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such file")
  text = read_text(path)
  decoder = json.JSONDecoder()
  line, seen = 1, 0  # line number at offset `seen`, counted incrementally

  def where(pos: int) -> str:
    nonlocal line, seen
    line += text.count("\n", seen, pos)
    seen = pos
    return f"{path}:{line}"

  def skip(pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
      pos += 1
    return pos

  pos = skip(0)
  if pos >= len(text) or text[pos] != "[":
    raise DataError(f"{where(pos)}: expected a JSON list of objects")
  pos = skip(pos + 1)
  if pos < len(text) and text[pos] == "]":  # an empty list
    if skip(pos + 1) < len(text):
      raise DataError(f"{where(skip(pos + 1))}: data after the end of the list")
    return
  while pos < len(text):
    try:
      obj, end = decoder.raw_decode(text, pos)
    except json.JSONDecodeError as e:
      raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
    here = where(pos)
    if not isinstance(obj, element):
      what = "a JSON object" if element is dict else f"a JSON {element.__name__}"
      raise DataError(f"{here}: expected {what}, got {type(obj).__name__}")
    yield line, obj
    pos = skip(end)
    if pos < len(text) and text[pos] == "]":
      if skip(pos + 1) < len(text):
        raise DataError(f"{where(skip(pos + 1))}: data after the end of the list")
      return
    if pos >= len(text):
      break
    if text[pos] != ",":
      raise DataError(f"{where(pos)}: expected ',' or ']' after a list element")
    pos = skip(pos + 1)
  raise DataError(f"{where(len(text))}: the list is not closed (missing ']')")


def field(obj: dict, key: str, types: Union[type, tuple[type, ...]], where: str) -> Any:
  """obj[key], checked to be an instance of `types` (bool is never accepted as int); DataError otherwise."""
  if key not in obj:
    raise DataError(f"{where}: missing field {key!r} (found {sorted(obj)})")
  value = obj[key]
  types = types if isinstance(types, tuple) else (types,)
  if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
    names = " or ".join(t.__name__ for t in types)
    raise DataError(f"{where}: field {key!r} is {type(value).__name__} ({value!r:.40}), expected {names}")
  return value


def write_jsonl(path: PathLike, rows: Iterable[dict]) -> pathlib.Path:
  """One compact JSON object per line (UTF-8, not ASCII-escaped), written atomically to `path`."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      for row in rows:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise
  return path
