"""Pretraining data: packing, word ids, tfds builders (embedded and user folders), bad lines,
atomic caching, per-process sharding, eval padding and resumable grain iterators."""

import collections
import itertools
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import grain
import numpy as np
import pytest

from pretrain import mlm
from roformer_jax import tokenization
from roformer_jax.data import CorpusError, PreparedData, builder, packing, pipeline, prepare, sources

REPO = pathlib.Path(__file__).resolve().parents[1]
SEQ_LEN = 64


def _reviews(n, start=0):
  return list(itertools.islice(sources.corpus.review_lines(), start, start + n))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
  lines = list(itertools.islice(sources.corpus.people_daily_lines(), 600)) + _reviews(300)
  path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
  tokenization.write_vocab(tokenization.build_char_vocab(lines), path)
  return tokenization.WordPieceTokenizer(path)


@pytest.fixture(scope="module")
def embedded(tokenizer, tmp_path_factory):
  """The embedded builder on its first 600 documents (People's Daily, gold words)."""
  return prepare("embedded", tokenizer, SEQ_LEN, tmp_path_factory.mktemp("tfds"),
                 max_documents=600, num_workers=1)


def _write_corpus(folder, txt_lines=(), jsonl_objects=(), raw_jsonl_lines=()):
  folder.mkdir(parents=True, exist_ok=True)
  (folder / "a.txt").write_text("".join(line + "\n" for line in txt_lines), encoding="utf-8")
  lines = [json.dumps(o, ensure_ascii=False) for o in jsonl_objects] + list(raw_jsonl_lines)
  (folder / "sub").mkdir(exist_ok=True)
  (folder / "sub" / "b.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
  (folder / "notes.md").write_text("not a corpus file\n")
  return folder


def _all_rows(prepared, split):
  src = prepared.data_source(split)
  return [packing.unstack(src[i]) for i in range(len(src))]


def _segments(row):
  """Content token ids of each document in a row, in order."""
  ids, seg = row["input_ids"], row["segment_ids"]
  return [ids[seg == s][1:-1] for s in range(1, seg.max() + 1)]


# ----------------------------------------------------------------------------------------------
# Word ids and packing
# ----------------------------------------------------------------------------------------------
def test_token_word_ids_follow_words_and_merge_crossing_tokens():
  char_word = np.array([0, 0, 1, 1, 2])  # words "ab" "cd" "e"
  offsets = np.array([(0, 1), (1, 2), (2, 4), (4, 5)])
  np.testing.assert_array_equal(packing.token_word_ids(offsets, char_word), [1, 1, 2, 3])
  char_word = np.array([0, 1, 1, 2])  # words "a" "bc" "d"; token "ab" crosses into "bc"
  offsets = np.array([(0, 2), (2, 3), (3, 4)])
  np.testing.assert_array_equal(packing.token_word_ids(offsets, char_word), [1, 1, 2])


def test_people_daily_uses_gold_words_and_reviews_use_jieba(tokenizer):
  doc = next(sources.embedded_documents())
  assert doc.words[:3] == ("迈向", "充满", "希望")
  ids, words = packing.encode_document(tokenizer, doc)
  np.testing.assert_array_equal(words[:6], [1, 1, 2, 2, 3, 3])
  review = sources.Document("我喜欢这本书", None)  # jieba: 我 / 喜欢 / 这 / 本书
  _, words = packing.encode_document(tokenizer, review)
  np.testing.assert_array_equal(words, [1, 2, 2, 3, 4, 4])


def test_word_level_tokenizer_keeps_one_id_per_jieba_word(tmp_path):
  lines = _reviews(300)
  vocab = tokenization.build_char_vocab(lines, extra_words=["喜欢", "本书"])
  tokenization.write_vocab(vocab, tmp_path / "vocab.txt")
  tok = tokenization.WordPieceTokenizer(tmp_path / "vocab.txt", pre_tokenize="jieba")
  ids, words = packing.encode_document(tok, sources.Document("我喜欢这本书，Hello 1998年", None))
  assert [tok.id_to_token(i) for i in ids[:4]] == ["我", "喜欢", "这", "本书"]
  # Word pieces of one word ("hello", "1998") share its id.
  np.testing.assert_array_equal(words, [1, 2, 3, 4, 5, 6, 6, 6, 6, 6, 7, 7, 7, 7, 8])


def test_packer_rows_segments_positions_and_chunks():
  p = packing.Packer(10, cls_id=2, sep_id=3, pad_id=0)
  p.add_document(np.array([10, 11, 12]), np.array([1, 1, 2]))
  p.add_document(np.array([20, 21, 22, 23]), np.array([1, 2, 2, 3]))
  # 12 tokens > 8 per row: the cut at 8 would split word 4 (tokens 6..8), so it moves to 6.
  p.add_document(np.arange(30, 42), np.array([1, 1, 2, 2, 3, 3, 4, 4, 4, 5, 6, 6]))
  p.add_document(np.array([50]), np.array([1]))  # first fit: the free end of row 0
  rows = p.finish()
  assert len(rows) == 4 and p.stats.documents == 4 and p.stats.chunks == 5
  np.testing.assert_array_equal(rows[0]["input_ids"], [2, 10, 11, 12, 3, 2, 50, 3, 0, 0])
  np.testing.assert_array_equal(rows[0]["segment_ids"], [1, 1, 1, 1, 1, 2, 2, 2, 0, 0])
  np.testing.assert_array_equal(rows[0]["positions"], [0, 1, 2, 3, 4, 0, 1, 2, 0, 0])
  np.testing.assert_array_equal(rows[0]["word_ids"], [0, 1, 1, 2, 0, 0, 3, 0, 0, 0])
  np.testing.assert_array_equal(rows[2]["input_ids"][:8], [2, 30, 31, 32, 33, 34, 35, 3])
  np.testing.assert_array_equal(rows[3]["input_ids"][:8], [2, 36, 37, 38, 39, 40, 41, 3])
  np.testing.assert_array_equal(rows[3]["word_ids"][:8], [0, 1, 1, 1, 2, 3, 3, 0])
  # A single word longer than a row is cut anyway.
  pieces = packing.chunks(np.arange(20), np.ones(20, np.int32), 8)
  assert [len(ids) for ids, _ in pieces] == [8, 8, 4]


def test_embedded_rows_are_packed_documents(embedded, tokenizer):
  meta = embedded.metadata
  assert meta["source"] == "embedded" and meta["bad_lines"] == 0
  assert sum(s["documents"] for s in meta["splits"].values()) == 600
  assert embedded.num_rows["heldout"] > 0 and embedded.num_rows["train"] > 10 * embedded.num_rows["heldout"]
  # Every document's ids, each followed by a separator that no segment can contain.
  sep = np.array([-1], np.int32).tobytes()
  docs = b"".join(packing.encode_document(tokenizer, d)[0].tobytes() + sep
                  for d in itertools.islice(sources.embedded_documents(), 600))
  for row in _all_rows(embedded, "train")[:100]:
    seg, pos = row["segment_ids"], row["positions"]
    n = int((seg > 0).sum())
    assert (seg[:n] > 0).all() and (seg[n:] == 0).all() and (np.diff(seg[:n]) >= 0).all()
    for s in range(1, seg.max() + 1):
      span = seg == s
      np.testing.assert_array_equal(pos[span], np.arange(span.sum()))  # RoPE restarts per document
      ids = row["input_ids"][span]
      assert ids[0] == tokenizer.cls_id and ids[-1] == tokenizer.sep_id
      assert row["word_ids"][span][0] == 0 and row["word_ids"][span][-1] == 0
    # A segment is one document or a piece of one, never parts of two.
    for content in _segments(row):
      assert content.tobytes() in docs
    w = row["word_ids"][row["word_ids"] > 0]
    np.testing.assert_array_equal(np.unique(w), np.arange(1, w.max() + 1))  # 1..W in order


def test_heldout_split_is_fixed_by_text_hash():
  texts = _reviews(2000)
  held = [t for t in texts if sources.is_heldout(t, 0.02)]
  assert 15 < len(held) < 70
  assert held == [t for t in texts if sources.is_heldout(t, 0.02)]


# ----------------------------------------------------------------------------------------------
# User corpora, bad lines, caching
# ----------------------------------------------------------------------------------------------
def test_user_folder_txt_and_jsonl(tokenizer, tmp_path):
  txt, objs = _reviews(40), [{"text": t, "id": i} for i, t in enumerate(_reviews(30, start=40))]
  folder = _write_corpus(tmp_path / "corpus", txt + [""], objs, ["   "])
  prepared = prepare(folder, tokenizer, SEQ_LEN, tmp_path / "tfds", text_field="text",
                     heldout_fraction=0.1, num_workers=1)
  assert prepared.metadata["source"] == str(folder.resolve()) and prepared.bad_lines == 0
  assert sum(s["documents"] for s in prepared.metadata["splits"].values()) == 70
  # Every token of every document is in exactly one row of one split.
  expected = collections.Counter()
  for t in txt + [o["text"] for o in objs]:
    expected.update(packing.encode_document(tokenizer, sources.Document(t, None))[0].tolist())
  got = collections.Counter()
  for split in ("train", "heldout"):
    for row in _all_rows(prepared, split):
      for content in _segments(row):
        got.update(content.tolist())
  assert got == expected


@pytest.mark.parametrize("name, content, line, reason", [
    ("a.txt", b"good line\n\xff\xfe broken\n", 2, "invalid UTF-8"),
    ("b.jsonl", b'{"content": "ok"}\n\n{"content": "unterminated\n', 3, "invalid JSON"),
    ("c.jsonl", b'{"title": "no text"}\n', 1, "no text field 'content'"),
    ("d.jsonl", b'{"content": 5}\n', 1, "text field 'content' is int, not a string"),
])
def test_bad_line_names_file_and_line(tmp_path, name, content, line, reason):
  (tmp_path / name).write_bytes(content)
  with pytest.raises(CorpusError, match=rf"{tmp_path / name}:{line}: {reason}.*skip_bad_lines=True"):
    list(sources.folder_documents(tmp_path))


def test_skip_bad_lines_counts_them_in_the_metadata(tokenizer, tmp_path):
  folder = _write_corpus(tmp_path / "corpus", _reviews(20),
                         [{"content": t} for t in _reviews(10, start=20)],
                         ['{"content": ', '{"other": 1}', "[1, 2]"])
  with open(folder / "a.txt", "ab") as f:
    f.write(b"\xc3\x28 bad utf-8\n")
  with pytest.raises(CorpusError, match=r"a\.txt:21: invalid UTF-8"):
    prepare(folder, tokenizer, SEQ_LEN, tmp_path / "tfds", num_workers=1)
  assert not list((tmp_path / "tfds").glob("*/*/1.0.0"))  # the failure left no dataset behind
  prepared = prepare(folder, tokenizer, SEQ_LEN, tmp_path / "tfds", skip_bad_lines=True,
                     heldout_fraction=0, num_workers=1)
  assert prepared.bad_lines == 4 and list(prepared.num_rows) == ["train"]
  assert prepared.metadata["first_bad_lines"][0].startswith(f"{folder / 'a.txt'}:21: invalid UTF-8")
  assert sum(s["documents"] for s in prepared.metadata["splits"].values()) == 30


def test_cache_is_reused_and_keyed(embedded, tokenizer, monkeypatch, tmp_path):
  data_dir = pathlib.Path(embedded.path).parents[2]
  monkeypatch.setattr(packing, "pack_documents", _fail)  # any re-tokenising would fail
  again = prepare("embedded", tokenizer, SEQ_LEN, data_dir, max_documents=600)
  assert again.path == embedded.path
  by_path = prepare("embedded", str(tokenizer.vocab_file), SEQ_LEN, data_dir, max_documents=600)
  assert by_path.path == embedded.path  # load_tokenizer gives the same tokenizer, so the same key
  other = tokenization.WordPieceTokenizer(tokenizer.vocab_file, do_lower_case=False)
  keys = {builder.cache_key(dict(source="embedded", text_field="content", seq_len=L, heldout_fraction=0.02,
                                 skip_bad_lines=False, max_documents=600), tok)
          for L in (64, 128) for tok in (tokenizer, other)}
  assert len(keys) == 4


def test_cache_key_follows_file_contents_not_mtimes(tokenizer, tmp_path):
  """An edit that keeps the size and restores the mtime (cp -p, rsync -t, tar) is a new corpus; a touch is not."""
  folder = _write_corpus(tmp_path / "corpus", ["甲乙丙", "丁戊己"])
  fields = dict(source=str(folder), text_field="content", seq_len=SEQ_LEN, heldout_fraction=0.02,
                skip_bad_lines=False, max_documents=None)
  key = builder.cache_key(fields, tokenizer)
  path = folder / "a.txt"
  st = path.stat()
  path.write_text("甲乙丙\n丁戊庚\n", encoding="utf-8")  # same size
  os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
  assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
  edited = builder.cache_key(fields, tokenizer)
  assert edited != key
  os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
  assert builder.cache_key(fields, tokenizer) == edited  # same bytes: the prepared rows still hold


def _fail(*args, **kwargs):
  raise RuntimeError("simulated crash while tokenising")


def test_crash_mid_prepare_leaves_no_complete_dataset(tokenizer, monkeypatch, tmp_path):
  folder = _write_corpus(tmp_path / "corpus", _reviews(30))
  real, calls = packing.pack_documents, []

  def crash_on_second_split(*args, **kwargs):  # train is fully written, heldout crashes
    calls.append(1)
    if len(calls) > 1:
      raise RuntimeError("simulated crash")
    return real(*args, **kwargs)

  monkeypatch.setattr(packing, "pack_documents", crash_on_second_split)
  with pytest.raises(RuntimeError, match="simulated crash"):
    prepare(folder, tokenizer, SEQ_LEN, tmp_path / "tfds", heldout_fraction=0.3, num_workers=1)
  assert not list((tmp_path / "tfds").glob("*/*/1.0.0"))
  monkeypatch.setattr(packing, "pack_documents", real)
  prepared = prepare(folder, tokenizer, SEQ_LEN, tmp_path / "tfds", heldout_fraction=0.3, num_workers=1)
  assert prepared.num_rows["train"] > 0 and prepared.num_rows["heldout"] > 0


_NO_TENSORFLOW = """
import importlib.machinery, sys
class NoTF(importlib.machinery.PathFinder):  # as if TensorFlow were not installed
  @classmethod
  def find_spec(cls, name, path=None, target=None):
    return None if name.split(".")[0] == "tensorflow" else super().find_spec(name, path, target)
sys.meta_path[:] = [NoTF if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
"""


def _run_python(code, **kwargs):
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  return subprocess.Popen([sys.executable, "-c", _NO_TENSORFLOW + textwrap.dedent(code)], env=env,
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def test_sigkill_mid_prepare_then_rebuild_without_tensorflow(tokenizer, tmp_path):
  """A killed prepare leaves only an incomplete.* folder; the rebuild, writing and reading, never
  imports TensorFlow (the writer runs in a process where it cannot be imported)."""
  folder = _write_corpus(tmp_path / "corpus", _reviews(60))
  marker = tmp_path / "heldout_started"
  proc = _run_python(f"""
      import pathlib, time
      from roformer_jax.data import packing, prepare
      from roformer_jax.tokenization import WordPieceTokenizer
      real, calls = packing.pack_documents, []
      def slow(*args):  # the train split is written, then the heldout split hangs
        calls.append(1)
        if len(calls) > 1:
          pathlib.Path({str(marker)!r}).touch()
          time.sleep(600)
        return real(*args)
      packing.pack_documents = slow
      prepare({str(folder)!r}, WordPieceTokenizer({str(tokenizer.vocab_file)!r}), {SEQ_LEN},
              {str(tmp_path / "tfds")!r}, heldout_fraction=0.3, num_workers=1)
  """)
  deadline = time.time() + 120
  while not marker.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.1)
  proc.send_signal(signal.SIGKILL)
  out, _ = proc.communicate()
  assert marker.exists(), out
  dataset_dir = next((tmp_path / "tfds" / "roformer_pretrain_corpus").iterdir())
  (incomplete,) = dataset_dir.iterdir()  # half written (the train split is there), never renamed
  assert incomplete.name.startswith("incomplete.") and list(incomplete.glob("*-train.array_record*"))

  proc = _run_python(f"""
      import sys
      from roformer_jax.data import prepare
      from roformer_jax.tokenization import WordPieceTokenizer
      from pretrain import mlm
      p = prepare({str(folder)!r}, WordPieceTokenizer({str(tokenizer.vocab_file)!r}), {SEQ_LEN},
                  {str(tmp_path / "tfds")!r}, heldout_fraction=0.3, num_workers=1)
      batch = next(mlm.make_pretrain_iterator(p, batch_size=2, seed=0))
      assert "tensorflow" not in sys.modules
      print("OK", p.num_rows["train"], batch["input_ids"].shape)
  """)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0 and "OK" in out, out
  assert PreparedData.load(dataset_dir / "1.0.0").num_rows["train"] > 0


def test_parallel_tokenising_gives_the_same_rows(tokenizer, monkeypatch, tmp_path):
  folder = _write_corpus(tmp_path / "corpus", _reviews(150), [{"content": t} for t in _reviews(50, 150)])
  monkeypatch.setattr(builder, "DOCS_PER_SHARD", 20)  # several shards, several in flight
  serial = prepare(folder, tokenizer, SEQ_LEN, tmp_path / "serial", num_workers=1)
  parallel = prepare(folder, tokenizer, SEQ_LEN, tmp_path / "parallel", num_workers=2)
  assert serial.metadata["splits"] == parallel.metadata["splits"]
  for split in ("train", "heldout"):
    for a, b in zip(_all_rows(serial, split), _all_rows(parallel, split), strict=True):
      for k in packing.ROW_KEYS:
        np.testing.assert_array_equal(a[k], b[k])


# ----------------------------------------------------------------------------------------------
# grain pipelines
# ----------------------------------------------------------------------------------------------
class _FakePrepared:
  """n numbered rows, for checking which rows each process reads."""

  def __init__(self, n, seq_len=4):
    self.seq_len, self.path = seq_len, "fake"
    self.rows = [{"row": np.full((len(packing.ROW_KEYS), seq_len), i + 1, np.int32)} for i in range(n)]

  def data_source(self, split):
    return self.rows


def _row_id(row):
  return {"index": np.int64(row["index"]), "epoch": np.int64(row["epoch"])}


def _stream(fake, batch_size, process_index, process_count, steps):
  ds = pipeline.train_dataset(fake, "train", batch_size=batch_size, seed=3, process_index=process_index,
                              process_count=process_count, transform=_row_id, num_threads=0)
  return [[(int(i), int(e)) for i, e in zip(b["index"], b["epoch"])] for b in itertools.islice(ds, steps)]


@pytest.mark.parametrize("rows, processes", [(10, 2), (10, 3), (2, 3), (1, 2)])
def test_processes_read_disjoint_rows_that_cover_the_data(rows, processes):
  fake, b, steps = _FakePrepared(rows), 2, 6
  single = _stream(fake, b * processes, 0, 1, steps)  # the global batches
  per_process = [_stream(fake, b, p, processes, steps) for p in range(processes)]
  for step in range(steps):
    union = [x for p in range(processes) for x in per_process[p][step]]
    assert sorted(union) == sorted(single[step])  # disjoint, and together the global batch
  stream = [x for batch in single for x in batch]
  for epoch in range(len(stream) // rows):
    chunk = stream[epoch * rows:(epoch + 1) * rows]
    assert sorted(chunk) == [(i, epoch) for i in range(rows)]  # each epoch covers every row once
  if len(stream) >= 2 * rows > 4:
    assert stream[:rows] != [(i - rows, e) for i, e in stream[rows:2 * rows]]  # reshuffled


def test_eval_pass_is_padded_to_whole_global_batches():
  fake = _FakePrepared(5)
  seen = []
  for p in range(2):
    ds = pipeline.eval_dataset(fake, "heldout", batch_size=2, process_index=p, process_count=2,
                               transform=lambda r: {"index": np.int64(r["index"]), "seg": r["segment_ids"]},
                               num_threads=0)
    batches = list(ds)
    assert len(batches) == 2  # ceil(5 / (2 * 2)) on every process
    for batch in batches:
      for index, seg in zip(batch["index"], batch["seg"]):
        seen.append(int(index))
        assert (seg == 0).all() if index >= 5 else (seg == index + 1).all()
  assert sorted(seen) == list(range(8))


def test_pretrain_batches_format_and_elastic_masks(embedded):
  P = mlm.default_max_predictions(SEQ_LEN)
  one = mlm.make_pretrain_iterator(embedded, batch_size=4, seed=5)
  batch = next(one)
  for key, (shape, dtype) in mlm.batch_spec(4, SEQ_LEN, P).items():
    assert batch[key].shape == shape and batch[key].dtype == dtype, key
  # The same global batch, with the same masks, whatever the process count.
  halves = [next(mlm.make_pretrain_iterator(embedded, batch_size=2, seed=5, process_index=p, process_count=2))
            for p in range(2)]
  rows = lambda b: sorted(map(bytes, np.concatenate([b["input_ids"], b["masked_positions"]], 1)))
  assert rows(batch) == sorted(rows(halves[0]) + rows(halves[1]))


def test_iterator_state_restores_the_next_batches_exactly(embedded, tmp_path):
  import orbax.checkpoint as ocp
  per_epoch = embedded.num_rows["train"] // 4
  it = mlm.make_pretrain_iterator(embedded, batch_size=4, seed=1)
  for _ in range(per_epoch - 2):  # resume just before an epoch boundary
    next(it)
  state = it.get_state()
  manager = ocp.CheckpointManager(tmp_path / "ckpt")
  manager.save(1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
  manager.wait_until_finished()
  expected = [next(it) for _ in range(5)]
  for restore in ("set_state", "orbax"):
    fresh = mlm.make_pretrain_iterator(embedded, batch_size=4, seed=1)
    if restore == "set_state":
      fresh.set_state(state)
    else:
      manager.restore(1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
    for want in expected:
      got = next(fresh)
      for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=f"{restore}: {k}")
  manager.close()


def test_eval_iterator_is_deterministic_and_pads_with_zero_weight(embedded):
  n = embedded.num_rows["heldout"]
  first = list(mlm.make_eval_iterator(embedded, batch_size=3, seed=2))
  second = list(mlm.make_eval_iterator(embedded, batch_size=3, seed=2))
  assert len(first) == -(-n // 3)
  for a, b in zip(first, second, strict=True):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  last = first[-1]
  pad = (last["segment_ids"] == 0).all(axis=1)
  assert pad.sum() == len(first) * 3 - n
  assert (last["masked_weights"][pad] == 0).all() and (last["masked_weights"][~pad].sum(1) > 0).all()


# ------------------------------------------------------------------------------------------------
# In-memory examples (fine-tuning) and labelled text files
# ------------------------------------------------------------------------------------------------
def _examples(n):
  return {"x": np.arange(n, dtype=np.int32)[:, None] * np.ones((1, 3), np.int32), "y": np.arange(n, dtype=np.int32)}


@pytest.mark.parametrize("rows, processes", [(10, 2), (7, 3)])
def test_example_batches_are_the_global_batch_split_by_process_and_cover_each_epoch(rows, processes):
  data, b, steps = _examples(rows), 2, 7
  stream = lambda p, n, size: [batch for batch in itertools.islice(pipeline.examples_train_dataset(
      data, batch_size=size, seed=4, process_index=p, process_count=n, num_threads=0), steps)]
  single = stream(0, 1, b * processes)
  parts = [stream(p, processes, b) for p in range(processes)]
  for step in range(steps):
    # Process blocks in process order are the global batch, rows and their arrays alike.
    np.testing.assert_array_equal(np.concatenate([parts[p][step]["y"] for p in range(processes)]), single[step]["y"])
    np.testing.assert_array_equal(single[step]["x"][:, 0], single[step]["y"])
    assert (single[step]["weights"] == 1).all()
  ys = np.concatenate([s["y"] for s in single])
  for epoch in range(len(ys) // rows):
    assert sorted(ys[epoch * rows:(epoch + 1) * rows]) == list(range(rows))
  assert list(ys[:rows]) != list(ys[rows:2 * rows])  # reshuffled every epoch


def test_example_transform_sees_index_and_epoch_and_state_resumes():
  data = _examples(5)
  seen = lambda row: {"y": row["y"], "tag": np.int32(100 * row["epoch"] + row["index"])}
  it = iter(pipeline.examples_train_dataset(data, batch_size=2, seed=0, process_index=0, process_count=1,
                                            transform=seen, num_threads=0))
  batches = [next(it) for _ in range(5)]
  for batch in batches:
    assert set(batch) == {"y", "tag", "weights"}
    np.testing.assert_array_equal(batch["tag"] % 100, batch["y"])
  tags = np.concatenate([b["tag"] for b in batches])
  assert list(tags // 100) == [0] * 5 + [1] * 5
  fresh = iter(pipeline.examples_train_dataset(data, batch_size=2, seed=0, process_index=0, process_count=1,
                                               transform=seen, num_threads=0))
  fresh.set_state({"next_index": 3})  # what Task.reposition does for a run restored on another process count
  np.testing.assert_array_equal(next(fresh)["tag"], batches[3]["tag"])


def test_example_eval_pass_is_in_order_and_padded_with_zero_weight():
  data = _examples(5)
  per_process = [list(pipeline.examples_eval_dataset(data, batch_size=2, process_index=p, process_count=2,
                                                     num_threads=0)) for p in range(2)]
  assert [len(b) for b in per_process] == [2, 2]
  rows = np.concatenate([np.concatenate([per_process[p][step]["y"] for p in range(2)]) for step in range(2)])
  weights = np.concatenate([np.concatenate([per_process[p][step]["weights"] for p in range(2)]) for step in range(2)])
  np.testing.assert_array_equal(rows, [0, 1, 2, 3, 4, 0, 0, 0])
  np.testing.assert_array_equal(weights, [1, 1, 1, 1, 1, 0, 0, 0])


@pytest.mark.parametrize("name, content, line, reason", [
    ("a.tsv", "好\tpos\n\n没有标签\n", 3, "expected 'text<TAB>label', found no tab"),
    ("b.tsv", "好\tpos\n坏\t \n", 2, "empty label after the tab"),
    ("x.tsv", "好\tpos\n很差\tneg\textra\n", 2, r"expected 'text<TAB>label', found 2 tabs \(3 columns; texts with tabs go in \.jsonl\)"),
    ("c.jsonl", '{"text": "好", "label": 1}\n{"text": "坏"\n', 2, "invalid JSON"),
    ("d.jsonl", '{"text": "好", "label": "pos"}\n{"content": "坏", "label": "neg"}\n', 2, "no field 'text'"),
    ("e.tsv", "好\tpos\n\xff\n", 2, "invalid UTF-8"),
])
def test_labeled_file_errors_name_file_and_line(tmp_path, name, content, line, reason):
  from roformer_jax.data import labeled
  path = tmp_path / name
  path.write_bytes(content.encode("utf-8").replace("\xff".encode("utf-8"), b"\xff"))
  with pytest.raises(sources.DataError, match=f"^{path}:{line}: {reason}"):
    labeled.read_labeled(path)


def test_labeled_files_and_label_ids(tmp_path):
  from roformer_jax.data import labeled
  (tmp_path / "a.tsv").write_text("一二\tpos\n\n三\tneg\n", encoding="utf-8")
  (tmp_path / "b.jsonl").write_text('{"t": "一", "y": 1}\n{"t": "二", "y": "0"}\n', encoding="utf-8")
  tsv = labeled.read_labeled(tmp_path / "a.tsv")
  assert tsv == [labeled.Example("一二", "pos", 1), labeled.Example("三", "neg", 3)]
  js = labeled.read_labeled(tmp_path / "b.jsonl", text_field="t", label_field="y")
  assert [(e.text, e.label) for e in js] == [("一", "1"), ("二", "0")]
  assert labeled.label_ids(tsv, ["neg", "pos"], "a.tsv") == [1, 0]
  with pytest.raises(sources.DataError, match=r"^a.tsv:3: label 'neg' is not one of \['pos'\]"):
    labeled.label_ids(tsv, ["pos"], "a.tsv")
  assert labeled.first_lines(tsv) == {"pos": 1, "neg": 3}
  with pytest.raises(sources.DataError, match=r"^a.tsv:3: label 'neg' is not one of \['pos'\] \(from x.tsv\)$"):
    labeled.label_ids(tsv, ["pos"], "a.tsv", "from x.tsv")
  with pytest.raises(IsADirectoryError, match=f"^{tmp_path}: a folder, not a data file$"):
    labeled.read_labeled(tmp_path)
  with pytest.raises(NotADirectoryError, match=f"^corpus folder {tmp_path / 'a.tsv'} is a file; give the folder"):
    sources.text_files(tmp_path / "a.tsv")
  (tmp_path / "empty.tsv").write_text("\n \n", encoding="utf-8")
  with pytest.raises(sources.DataError, match=f"^{tmp_path / 'empty.tsv'}: no examples \\(the file is empty or blank\\)$"):
    labeled.read_labeled(tmp_path / "empty.tsv")
