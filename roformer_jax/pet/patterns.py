"""PET patterns and verbalizers as data, and their encoding with the project's tokenizers.

A pattern is a string with one `{text}` slot and one blank, a run of n `＿` (U+FF3F) that becomes n
[MASK] tokens: `＿满意。{text}` (P1), `{text}＿满意。` (P2, blank after the text), or
`下面报导一则＿＿新闻。{text}` (a two-token blank). A verbalizer maps every label name to one word
of exactly n tokens: `{"pos": "很", "neg": "不"}`. A labelled example is

  [CLS] <pattern with [MASK] x n at the blank and the text in its slot> [SEP]

Each part is tokenised on its own and the ids joined, so the blank's positions are known exactly
(for char vocabularies the ids equal those of the whole string with the word in the blank, as the
reference builds them). Truncation to `max_length` shortens the text only, from its end, so the
pattern and its blank survive in every row (the reference truncates the whole string: a suffix
pattern such as P2 would lose its blank on long reviews). Unlabelled texts in the unsupervised and
semi-supervised regimes get no pattern: `[CLS] text [SEP]` (spec a.2).

Bad patterns and verbalizers raise `ConfigError` naming the config key.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Mapping, Optional, Sequence

import numpy as np

from roformer_jax.config import ConfigError

BLANK = "＿"  # U+FF3F FULLWIDTH LOW LINE, as the blog writes the blank
TEXT_SLOT = "{text}"
# The patterns of kexue 7764 (spec a.1) and its verbalizer.
SENTIMENT_PATTERNS = {"P1": "＿满意。{text}", "P2": "{text}＿满意。", "P3": "＿好。{text}", "P4": "＿理想。{text}",
                      "P5": "感觉如何？＿满意。{text}"}
SENTIMENT_VERBALIZER = {"pos": "很", "neg": "不"}


@dataclasses.dataclass(frozen=True)
class Pattern:
  """A parsed pattern: `parts` in order, each a literal string, `TEXT_SLOT`, or `BLANK * width`."""
  source: str
  parts: tuple[str, ...]
  width: int

  @property
  def blank_index(self) -> int:
    return self.parts.index(BLANK * self.width)


def parse_pattern(pattern: str, key: str = "config.pattern") -> Pattern:
  """Checks and splits `pattern`: exactly one `{text}` and exactly one blank run of `＿`."""
  if not isinstance(pattern, str):
    raise ConfigError(f"{key} must be a string like '＿满意。{{text}}', got {type(pattern).__name__}")
  n_slots = pattern.count(TEXT_SLOT)
  if n_slots != 1:
    raise ConfigError(f"{key} = {pattern!r} must contain {TEXT_SLOT} exactly once, found {n_slots}")
  blanks = re.findall(f"{BLANK}+", pattern)
  if len(blanks) != 1:
    hint = " (write the blank as the full-width ＿, U+FF3F)" if not blanks and "_" in pattern else ""
    raise ConfigError(f"{key} = {pattern!r} must contain exactly one blank (a run of ＿), found {len(blanks)}{hint}")
  width = len(blanks[0])
  parts = [p for p in re.split(f"({re.escape(TEXT_SLOT)}|{BLANK}+)", pattern) if p]
  return Pattern(pattern, tuple(parts), width)


def _token_ids(tokenizer, texts: Sequence[str], max_tokens: Optional[int] = None, chunk: int = 512
               ) -> list[np.ndarray]:
  """Ids of each text without [CLS]/[SEP], the first `max_tokens` only (None: all)."""
  out = []
  for i in range(0, len(texts), chunk):
    part = list(texts[i:i + chunk])
    b = tokenizer.encode_batch(part, max_length=None if max_tokens is None else max_tokens + 2,
                               return_offsets=False)
    lengths = b["attention_mask"].sum(1)
    out += [b["input_ids"][j, 1:n - 1].copy() for j, n in enumerate(lengths.tolist())]
  return out


class PetEncoder:
  """Encodes texts with a pattern (labelled / scored examples) or without (unlabelled MLM texts).

  Args:
    tokenizer: a `roformer_jax.tokenization` tokenizer (e.g. `load_tokenizer(workdir)`).
    pattern: see `parse_pattern`.
    verbalizer: {label name: word}, one word per label, each exactly the blank's width in tokens.
    label_names: the dataset's labels, in class-index order; the verbalizer must cover exactly these.
    max_length: tokens per row, [CLS] and [SEP] included.
    pattern_key, verbalizer_key: the config keys named in errors.
  """

  def __init__(self, tokenizer, pattern: str, verbalizer: Mapping[str, str], label_names: Sequence[str],
               max_length: int = 128, pattern_key: str = "config.pattern",
               verbalizer_key: str = "config.verbalizer"):
    self.tokenizer = tokenizer
    self.pattern = parse_pattern(pattern, pattern_key)
    self.label_names = tuple(label_names)
    self.max_length = max_length
    self.mask_id = tokenizer.mask_id
    unk = tokenizer.unk_id
    # The literal parts of the pattern, tokenised once.
    self._parts: list[Optional[np.ndarray]] = []
    for part in self.pattern.parts:
      if part == TEXT_SLOT:
        self._parts.append(None)
      elif part == BLANK * self.pattern.width:
        self._parts.append(np.full(self.pattern.width, self.mask_id, np.int32))
      else:
        ids = _token_ids(tokenizer, [part])[0]
        if unk in ids.tolist():
          raise ConfigError(f"{pattern_key} = {pattern!r}: {part!r} has characters not in the vocabulary "
                            f"(tokens {tokenizer.tokenize(part)})")
        self._parts.append(ids)
    self.pattern_length = sum(len(p) for p in self._parts if p is not None)
    self.text_budget = max_length - 2 - self.pattern_length
    if self.text_budget < 1:
      raise ConfigError(f"{pattern_key} = {pattern!r} takes {self.pattern_length} tokens: no room for the text "
                        f"in max_length = {max_length} ([CLS] and [SEP] included)")
    self.label_token_ids = self._verbalize(verbalizer, verbalizer_key, pattern_key)

  def _verbalize(self, verbalizer: Mapping[str, str], key: str, pattern_key: str) -> np.ndarray:
    if not isinstance(verbalizer, Mapping):
      raise ConfigError(f"{key} must map each label to a word, like {SENTIMENT_VERBALIZER}; got {verbalizer!r}")
    missing = [n for n in self.label_names if n not in verbalizer]
    if missing:
      raise ConfigError(f"{key} has no word for label(s) {missing} (labels: {list(self.label_names)})")
    extra = [n for n in verbalizer if n not in self.label_names]
    if extra:
      raise ConfigError(f"{key} names label(s) {extra} that the data does not have (labels: {list(self.label_names)})")
    width, unk, rows = self.pattern.width, self.tokenizer.unk_id, []
    for name in self.label_names:
      word = verbalizer[name]
      if not isinstance(word, str) or not word:
        raise ConfigError(f"{key}[{name!r}] must be a non-empty string, got {word!r}")
      ids = _token_ids(self.tokenizer, [word])[0]
      if unk in ids.tolist() or len(ids) == 0:
        raise ConfigError(f"{key}[{name!r}] = {word!r} is not in the vocabulary "
                          f"(tokens {self.tokenizer.tokenize(word)})")
      if len(ids) != width:
        raise ConfigError(f"{key}[{name!r}] = {word!r} is {len(ids)} tokens {self.tokenizer.tokenize(word)}, but the "
                          f"blank in {pattern_key} = {self.pattern.source!r} is {width} ({BLANK * width}); "
                          f"every word must fill the blank exactly")
      rows.append(ids)
    table = np.stack(rows).astype(np.int32)
    seen: dict[tuple, str] = {}
    for name, row in zip(self.label_names, map(tuple, table.tolist())):
      if row in seen:
        raise ConfigError(f"{key}: labels {seen[row]!r} and {name!r} have the same word {verbalizer[name]!r}")
      seen[row] = name
    return table

  @property
  def width(self) -> int:
    """Tokens in the blank (= tokens of every verbalizer word)."""
    return self.pattern.width

  def encode(self, texts: Sequence[str]) -> tuple[list[np.ndarray], np.ndarray]:
    """Pattern rows: (ids of each row, [CLS] ... [SEP], unpadded; blank positions [N, width] int32).

    The blank holds [MASK]; `label_token_ids[label]` are the words to predict there.
    """
    rows, positions = [], np.zeros((len(texts), self.width), np.int32)
    for i, text_ids in enumerate(_token_ids(self.tokenizer, texts, self.text_budget)):
      pieces, start = [np.asarray([self.tokenizer.cls_id], np.int32)], 1
      for k, part in enumerate(self._parts):
        ids = text_ids if part is None else part
        if k == self.pattern.blank_index:
          positions[i] = np.arange(start, start + self.width)
        pieces.append(ids.astype(np.int32))
        start += len(ids)
      pieces.append(np.asarray([self.tokenizer.sep_id], np.int32))
      rows.append(np.concatenate(pieces))
    return rows, positions

  def encode_plain(self, texts: Sequence[str]) -> list[np.ndarray]:
    """Rows without a pattern, `[CLS] text [SEP]` truncated to `max_length` (unlabelled MLM texts)."""
    cls, sep = np.asarray([self.tokenizer.cls_id], np.int32), np.asarray([self.tokenizer.sep_id], np.int32)
    return [np.concatenate([cls, ids.astype(np.int32), sep])
            for ids in _token_ids(self.tokenizer, texts, self.max_length - 2)]
