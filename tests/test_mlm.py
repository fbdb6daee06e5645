"""Whole-word masking on real packed rows: rates, the whole-word property, determinism, overflow."""

import itertools

import numpy as np
import pytest

from pretrain import mlm
from roformer_jax import tokenization
from roformer_jax.data import packing, sources

SEQ_LEN = 128


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
  docs = _docs()
  path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
  tokenization.write_vocab(tokenization.build_char_vocab(d.text for d in docs), path)
  return tokenization.WordPieceTokenizer(path)


def _docs():
  """People's Daily (gold words) and reviews (jieba words): a small, real mix."""
  embedded = sources.embedded_documents()
  people = list(itertools.islice(embedded, 800))
  reviews = list(itertools.islice((d for d in embedded if d.words is None), 300))
  return people + reviews


@pytest.fixture(scope="module")
def rows(tokenizer):
  rows, _ = packing.pack_documents(tokenizer, _docs(), SEQ_LEN)
  return rows


@pytest.fixture(scope="module")
def transform(tokenizer):
  random_ids = np.arange(5, tokenizer.vocab_size)  # specials are ids 0..4
  return mlm.WholeWordMask(seed=7, max_predictions=mlm.default_max_predictions(SEQ_LEN),
                           mask_id=tokenizer.mask_id, random_ids=random_ids)


def _mask(transform, row, index=0, epoch=0):
  return transform.map(dict(row, index=index, epoch=epoch))


def _selected(example):
  """Boolean [L]: the positions that carry a real prediction."""
  sel = np.zeros(SEQ_LEN, bool)
  sel[example["masked_positions"][example["masked_weights"] > 0]] = True
  return sel


def _binomial_ok(successes, trials, p, sigmas=4.0):
  return abs(successes - trials * p) <= sigmas * np.sqrt(trials * p * (1 - p))


def test_rates_and_80_10_10(rows, transform, tokenizer):
  selected_words = total_words = 0
  actions = {"mask": 0, "keep": 0, "random": 0}
  for epoch in range(3):
    for index, row in enumerate(rows):
      ex = _mask(transform, row, index, epoch)
      sel = _selected(ex)
      words = row["word_ids"]
      total_words += int(words.max())
      for w in np.unique(words[sel]):
        selected_words += 1
        span = words == w
        new, old = ex["input_ids"][span], row["input_ids"][span]
        if (new == tokenizer.mask_id).all():
          actions["mask"] += 1
        elif (new == old).all():
          actions["keep"] += 1
        else:
          actions["random"] += 1
  assert total_words > 50_000
  assert _binomial_ok(selected_words, total_words, 0.15), selected_words / total_words
  for action, p in (("mask", 0.8), ("keep", 0.1), ("random", 0.1)):
    assert _binomial_ok(actions[action], selected_words, p), (action, actions[action] / selected_words)


def test_whole_words_only_and_specials_never_selected(rows, transform, tokenizer):
  for index, row in enumerate(rows[:300]):
    ex = _mask(transform, row, index)
    sel, words = _selected(ex), row["word_ids"]
    # A word is selected with all of its tokens or not at all.
    for w in np.unique(words[words > 0]):
      assert len(set(sel[words == w])) == 1, (index, w)
    assert not sel[words == 0].any()  # [CLS], [SEP], padding
    changed = ex["input_ids"] != row["input_ids"]
    assert not (changed & ~sel).any()  # nothing outside the predictions is corrupted
    random_tokens = ex["input_ids"][changed & (ex["input_ids"] != tokenizer.mask_id)]
    assert (random_tokens >= 5).all()  # random ids never special
    n = int(ex["masked_weights"].sum())
    np.testing.assert_array_equal(ex["masked_labels"][:n], row["input_ids"][ex["masked_positions"][:n]])
    assert (ex["masked_positions"][n:] == 0).all() and (ex["masked_labels"][n:] == 0).all()
    np.testing.assert_array_equal(np.sort(ex["masked_positions"][:n]), ex["masked_positions"][:n])


def test_output_format(rows, transform):
  ex = _mask(transform, rows[0])
  P = transform.max_predictions
  spec = mlm.batch_spec(1, SEQ_LEN, P)
  for key, (shape, dtype) in spec.items():
    assert ex[key].shape == shape[1:] and ex[key].dtype == dtype, key
  assert (ex["token_type_ids"] == 0).all()
  np.testing.assert_array_equal(ex["segment_ids"], rows[0]["segment_ids"])
  np.testing.assert_array_equal(ex["positions"], rows[0]["positions"])


def test_masks_depend_only_on_seed_index_epoch(rows, transform):
  row = rows[3]
  a, b = _mask(transform, row, 3, 1), _mask(transform, row, 3, 1)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  for other in (_mask(transform, row, 3, 2), _mask(transform, row, 4, 1),
                mlm.WholeWordMask(seed=8, max_predictions=transform.max_predictions, mask_id=transform.mask_id,
                                  random_ids=transform.random_ids).map(dict(row, index=3, epoch=1))):
    assert not np.array_equal(a["input_ids"], other["input_ids"])


def test_overflow_keeps_whole_words_and_counts_the_rest(rows, tokenizer):
  kw = dict(mask_id=tokenizer.mask_id, random_ids=np.arange(5, tokenizer.vocab_size))
  seen_overflow = 0
  for index, row in enumerate(rows[:200]):
    full = mlm.whole_word_mask(row["input_ids"], row["word_ids"], np.random.default_rng(index),
                               max_predictions=SEQ_LEN, **kw)
    small = mlm.whole_word_mask(row["input_ids"], row["word_ids"], np.random.default_rng(index),
                                max_predictions=8, **kw)
    n_full, n_small = int(full["masked_weights"].sum()), int(small["masked_weights"].sum())
    assert n_small <= 8 and n_small + small["masked_overflow"] == n_full
    # The kept predictions are whole words of the full selection.
    assert set(small["masked_positions"][:n_small]) <= set(full["masked_positions"][:n_full])
    words = row["word_ids"]
    kept = words[small["masked_positions"][:n_small]]
    for w in np.unique(kept):
      assert (kept == w).sum() == (words == w).sum()
    seen_overflow += int(small["masked_overflow"] > 0)
  assert seen_overflow > 100


def test_overflow_drops_words_anywhere_in_the_row(rows, tokenizer):
  """Words dropped on overflow are not always the row's last ones: the tail of a packed row (its
  later documents) is predicted as often, relative to its selection, as the head."""
  kw = dict(mask_id=tokenizer.mask_id, random_ids=np.arange(5, tokenizer.vocab_size))
  full_at, kept_at = np.zeros(SEQ_LEN), np.zeros(SEQ_LEN)
  for index, row in enumerate(rows[:300]):
    for max_predictions, counts in ((SEQ_LEN, full_at), (12, kept_at)):
      ex = mlm.whole_word_mask(row["input_ids"], row["word_ids"], np.random.default_rng(index),
                               max_predictions=max_predictions, **kw)
      counts[ex["masked_positions"][ex["masked_weights"] > 0]] += 1
  head, tail = slice(1, SEQ_LEN // 3), slice(2 * SEQ_LEN // 3, SEQ_LEN)
  head_rate, tail_rate = kept_at[head].sum() / full_at[head].sum(), kept_at[tail].sum() / full_at[tail].sum()
  assert head_rate < 0.9 and abs(tail_rate - head_rate) < 0.1 * head_rate, (head_rate, tail_rate)


def test_default_max_predictions_rarely_overflows(rows, transform):
  overflows = sum(_mask(transform, row, i, e)["masked_overflow"] > 0
                  for e in range(4) for i, row in enumerate(rows))
  assert overflows / (4 * len(rows)) < 0.002
  assert mlm.default_max_predictions(128) == 48 and mlm.default_max_predictions(512) == 128
