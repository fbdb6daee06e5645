"""Tokenise documents with per-token word ids, and pack them into fixed-length rows.

A row holds whole `[CLS] chunk [SEP]` units side by side, each its own segment:

  input_ids    [CLS] a1 a2 a3 [SEP] [CLS] b1 b2 [SEP] [PAD] ...
  segment_ids    1    1  1  1   1     2    2  2   2     0   ...   (0 = padding)
  positions      0    1  2  3   4     0    1  2   3     0   ...   (RoPE restarts per document)
  word_ids       0    1  1  2   0     0    3  4   0     0   ...   (0 = never masked)

Word ids number the whole words of the row from 1 in order, so whole-word masking needs only
the row. A document longer than the row is cut into chunks, at a word boundary where one exists.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Iterable, Optional, Sequence

import numpy as np

from roformer_jax.data.sources import Document

ROW_KEYS = ("input_ids", "segment_ids", "positions", "word_ids")
MAX_OPEN = 8  # rows that still take documents while packing (see `Packer`)


def unstack(record: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """A stored record {"row": [4, L]} as the row dict {input_ids: [L], ...}."""
  return dict(zip(ROW_KEYS, record["row"]))


def char_words(doc: Document) -> np.ndarray:
  """Index of the word each character of `doc.text` belongs to: gold words, else jieba (HMM off)."""
  words = doc.words
  if words is None:
    import jieba  # imported here: loading its dictionary takes a second
    jieba.setLogLevel(logging.WARNING)
    words = jieba.lcut(doc.text, HMM=False)
  lengths = [len(w) for w in words]
  if sum(lengths) != len(doc.text):
    raise ValueError(f"words do not spell the text: {doc.text[:50]!r}...")
  return np.repeat(np.arange(len(words), dtype=np.int32), lengths)


def token_word_ids(offsets: np.ndarray, char_word: np.ndarray) -> np.ndarray:
  """Word ids 1, 2, ... of tokens from their character `offsets` [n, 2].

  A token belongs to the word of its first character; a token that runs past the end of its word
  (a WordPiece or SentencePiece token crossing a segmentation boundary) merges the words it
  touches, so a word is never split between two masking decisions.
  """
  if not len(offsets):
    return np.zeros(0, np.int32)
  last = len(char_word) - 1
  starts = np.minimum(offsets[:, 0], last)
  ends = np.clip(offsets[:, 1] - 1, starts, last)  # last character; zero-width tokens use the start
  first_word, last_word = char_word[starts], char_word[ends]
  new_word = np.ones(len(offsets), bool)
  new_word[1:] = first_word[1:] > np.maximum.accumulate(last_word)[:-1]
  return np.cumsum(new_word, dtype=np.int32)


def encode_document(tokenizer, doc: Document) -> tuple[np.ndarray, np.ndarray]:
  """(token ids, word ids) of a document's content, without [CLS]/[SEP]."""
  enc = tokenizer.encode(doc.text)
  ids = np.asarray(enc.ids[1:-1], np.int32)
  offsets = np.asarray(enc.offsets[1:-1], np.int64).reshape(-1, 2)
  return ids, token_word_ids(offsets, char_words(doc))


def chunks(ids: np.ndarray, word_ids: np.ndarray, max_len: int) -> list[tuple[np.ndarray, np.ndarray]]:
  """Cuts a document into pieces of at most `max_len` tokens, between words where possible."""
  out, start, n = [], 0, len(ids)
  while start < n:
    end = min(start + max_len, n)
    if end < n and word_ids[end] == word_ids[end - 1]:  # would cut inside a word
      word_start = int(np.searchsorted(word_ids, word_ids[end], "left"))
      end = word_start if word_start > start else end  # a word longer than a row is cut anyway
    out.append((ids[start:end], word_ids[start:end]))
    start = end
  return out


@dataclasses.dataclass
class PackStats:
  documents: int = 0
  chunks: int = 0
  rows: int = 0
  tokens: int = 0  # non-padding tokens, [CLS]/[SEP] included

  def add(self, other: "PackStats") -> None:
    for f in dataclasses.fields(self):
      setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


class Packer:
  """First-fit packing of `[CLS] chunk [SEP]` units into rows of `seq_len`.

  Only the `max_open` most recent rows take new units; older ones are emitted. This keeps the
  cost linear and the output a deterministic function of the input order.
  """

  def __init__(self, seq_len: int, cls_id: int, sep_id: int, pad_id: int = 0, max_open: int = MAX_OPEN):
    if seq_len < 3:
      raise ValueError(f"seq_len ({seq_len}) must hold at least [CLS] x [SEP]")
    self.seq_len, self.cls_id, self.sep_id, self.pad_id = seq_len, cls_id, sep_id, pad_id
    self.max_open = max_open
    self._open: list[list] = []  # [free slots, units]
    self._rows: list[dict[str, np.ndarray]] = []
    self.stats = PackStats()

  def add_document(self, ids: np.ndarray, word_ids: np.ndarray) -> None:
    if not len(ids):
      return
    self.stats.documents += 1
    for unit in chunks(ids, word_ids, self.seq_len - 2):
      self._add_unit(unit)

  def _add_unit(self, unit) -> None:
    self.stats.chunks += 1
    size = len(unit[0]) + 2
    for row in self._open:
      if row[0] >= size:
        row[0] -= size
        row[1].append(unit)
        return
    self._open.append([self.seq_len - size, [unit]])
    if len(self._open) > self.max_open:
      self._emit(self._open.pop(0)[1])

  def _emit(self, units: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
    L = self.seq_len
    row = {k: np.zeros(L, np.int32) for k in ROW_KEYS}
    row["input_ids"][:] = self.pad_id
    pos = words = 0
    for segment, (ids, wids) in enumerate(units, 1):
      n = len(ids)
      row["input_ids"][pos:pos + n + 2] = [self.cls_id, *ids, self.sep_id]
      row["segment_ids"][pos:pos + n + 2] = segment
      row["positions"][pos:pos + n + 2] = np.arange(n + 2)
      row["word_ids"][pos + 1:pos + n + 1] = wids - wids[0] + 1 + words  # renumber from the row's next id
      words = int(row["word_ids"][pos + n])
      pos += n + 2
    self.stats.rows += 1
    self.stats.tokens += pos
    self._rows.append(row)

  def finish(self) -> list[dict[str, np.ndarray]]:
    """Emits the open rows and returns (and forgets) every row packed so far."""
    for _, units in self._open:
      self._emit(units)
    self._open = []
    rows, self._rows = self._rows, []
    return rows


def pack_documents(tokenizer, docs: Iterable[Document], seq_len: int,
                   max_open: int = MAX_OPEN) -> tuple[list[dict[str, np.ndarray]], PackStats]:
  """Tokenises and packs `docs`; returns the rows (dicts of int32 [seq_len]) and counts."""
  packer = Packer(seq_len, tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id, max_open)
  for doc in docs:
    packer.add_document(*encode_document(tokenizer, doc))
  return packer.finish(), packer.stats


# Worker-process side of `pack_documents`: the tokenizer is sent once, by the pool initializer.
_worker: Optional[tuple] = None


def init_worker(tokenizer, seq_len: int) -> None:
  global _worker
  _worker = (tokenizer, seq_len)


def pack_shard(docs: list[Document]) -> tuple[list[dict[str, np.ndarray]], PackStats]:
  tokenizer, seq_len = _worker
  return pack_documents(tokenizer, docs, seq_len)
