"""Whole-word masking (the RoFormerV2 recipe) and the pretraining / eval batch iterators.

Each word of a row is selected with p = 0.15. A selected word has all its tokens predicted and
is replaced as a whole: 80% of words by [MASK] on every token, 10% kept, 10% by random ids drawn
uniformly from the non-special vocabulary. [CLS], [SEP] and padding (word id 0) are never
selected. The masks are a function of (seed, row index, epoch) only, so a resumed run, or the
same row on another process count, sees the same masks.

The iterators live here rather than in `roformer_jax.data` because the library never imports
`pretrain/`; the library pipeline takes the transform as an argument.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import grain
import numpy as np

from roformer_jax.data import PreparedData, pipeline

SELECT_PROB, MASK_PROB, RANDOM_PROB = 0.15, 0.8, 0.1


def default_max_predictions(seq_len: int) -> int:
  """Prediction slots per row: the expected count plus 4 standard deviations, rounded up to 8.

  Selecting words of n_i tokens with p = 0.15 gives mean 0.15 L and variance p (1 - p) sum n_i^2,
  about 0.255 L for Chinese words (E[n^2] / E[n] ~ 2). That is 48 at L = 128 and 128 at L = 512.
  On the embedded corpus no row of 9,600 at L = 128 overflowed it (tests/test_mlm.py checks the
  rate stays under 0.2%); ceil(0.2 L) = 26 would overflow on ~7% of rows.
  """
  mean, std = SELECT_PROB * seq_len, math.sqrt(0.255 * seq_len)
  return min(seq_len, 8 * math.ceil((mean + 4 * std) / 8))


def whole_word_mask(input_ids: np.ndarray, word_ids: np.ndarray, rng: np.random.Generator, *,
                    max_predictions: int, mask_id: int, random_ids: np.ndarray,
                    select_prob: float = SELECT_PROB, mask_prob: float = MASK_PROB,
                    random_prob: float = RANDOM_PROB) -> dict[str, np.ndarray]:
  """Masks whole words of one row.

  Args:
    input_ids: [L] int token ids.
    word_ids: [L] int, 1.. for the words of the row (a word's tokens share an id and are
      contiguous, ids non-decreasing), 0 for tokens that are never masked.
    rng: the only source of randomness; it makes the same draws whatever the data.
    max_predictions: P, the prediction slots. If the selected words hold more than P tokens,
      whole words are kept in a random order while they fit; the tokens of the words left out
      are counted in `masked_overflow`.
    mask_id: the [MASK] id.
    random_ids: the ids a "random" word's tokens are drawn from (uniformly).

  Returns:
    input_ids [L] int32 (corrupted), masked_positions / masked_labels [P] int32 (0 in unused
    slots), masked_weights [P] float32 (1 real, 0 padding), masked_overflow int32 scalar.
  """
  input_ids = np.asarray(input_ids, np.int32)
  word_ids = np.asarray(word_ids)
  num_words = int(word_ids.max(initial=0))
  # A fixed set of draws, so the masks of a row never depend on another row.
  selected_word = rng.random(num_words + 1) < select_prob
  action = rng.random(num_words + 1)
  random_tokens = random_ids[rng.integers(len(random_ids), size=len(input_ids))]
  # Drawn last, so a row whose selection fits keeps the masks the draws above give it.
  priority = rng.random(num_words + 1)
  selected_word[0] = False

  positions = np.flatnonzero(selected_word[word_ids])
  words = word_ids[positions]  # non-decreasing
  # On overflow, whole words are kept in a random order (not the row's first words, which would
  # never predict the tail of a long row) while they fit.
  chosen, sizes = np.unique(words, return_counts=True)
  order = np.argsort(priority[chosen], kind="stable")
  kept = np.zeros(num_words + 1, bool)
  kept[chosen[order[np.cumsum(sizes[order]) <= max_predictions]]] = True
  fits = kept[words]
  overflow = len(positions) - int(fits.sum())
  positions, words = positions[fits], words[fits]

  corrupted = input_ids.copy()
  word_action = action[words]
  masked = positions[word_action < mask_prob]
  randomised = positions[word_action >= 1.0 - random_prob]
  corrupted[masked] = mask_id
  corrupted[randomised] = random_tokens[randomised]

  n = len(positions)
  out_positions = np.zeros(max_predictions, np.int32)
  out_labels = np.zeros(max_predictions, np.int32)
  weights = np.zeros(max_predictions, np.float32)
  out_positions[:n], out_labels[:n], weights[:n] = positions, input_ids[positions], 1.0
  return dict(input_ids=corrupted, masked_positions=out_positions, masked_labels=out_labels,
              masked_weights=weights, masked_overflow=np.int32(overflow))


class WholeWordMask(grain.transforms.Map):
  """grain transform: a packed row (with `index`, `epoch`) -> one MLM example (see `batch_spec`)."""

  def __init__(self, *, seed: int, max_predictions: int, mask_id: int, random_ids: np.ndarray,
               select_prob: float = SELECT_PROB, mask_prob: float = MASK_PROB,
               random_prob: float = RANDOM_PROB):
    if seed < 0:
      raise ValueError(f"seed ({seed}) must be non-negative")
    if not (0 < select_prob < 1 and mask_prob >= 0 and random_prob >= 0 and mask_prob + random_prob <= 1):
      raise ValueError(f"bad masking probabilities: select {select_prob}, mask {mask_prob}, random {random_prob}")
    self.seed, self.max_predictions, self.mask_id = seed, max_predictions, mask_id
    self.random_ids = np.asarray(random_ids, np.int32)
    self.probs = dict(select_prob=select_prob, mask_prob=mask_prob, random_prob=random_prob)

  @classmethod
  def for_data(cls, prepared: PreparedData, *, seed: int, max_predictions: Optional[int] = None,
               **probs) -> "WholeWordMask":
    """The transform for `prepared`'s tokenizer: random ids exclude the special tokens."""
    random_ids = np.setdiff1d(np.arange(prepared.vocab_size), prepared.special_ids)
    return cls(seed=seed, max_predictions=max_predictions or default_max_predictions(prepared.seq_len),
               mask_id=prepared.mask_id, random_ids=random_ids, **probs)

  def map(self, row: dict[str, Any]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng((self.seed, int(row["index"]), int(row["epoch"])))
    example = whole_word_mask(row["input_ids"], row["word_ids"], rng, max_predictions=self.max_predictions,
                              mask_id=self.mask_id, random_ids=self.random_ids, **self.probs)
    example["token_type_ids"] = np.zeros_like(example["input_ids"])
    example["segment_ids"] = np.asarray(row["segment_ids"], np.int32)
    example["positions"] = np.asarray(row["positions"], np.int32)
    return example


def batch_spec(batch_size: int, seq_len: int, max_predictions: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  """Shape and dtype of every array in a batch (per process)."""
  b, L, P = batch_size, seq_len, max_predictions
  spec = {k: ((b, L), np.dtype(np.int32)) for k in ("input_ids", "token_type_ids", "segment_ids", "positions")}
  spec.update(masked_positions=((b, P), np.dtype(np.int32)), masked_labels=((b, P), np.dtype(np.int32)),
              masked_weights=((b, P), np.dtype(np.float32)), masked_overflow=((b,), np.dtype(np.int32)))
  return spec


def make_pretrain_iterator(prepared: PreparedData, split: str = "train", *, batch_size: int, seed: int,
                           process_index: int = 0, process_count: int = 1,
                           max_predictions: Optional[int] = None, num_threads: int = 2,
                           prefetch: int = 4) -> grain.DatasetIterator:
  """Endless MLM batches for this process: shuffled per epoch, masked, `batch_spec` shaped.

  Pass `process_index=jax.process_index(), process_count=jax.process_count()`. The iterator's
  `get_state()` / `set_state()` (or grain.checkpoint.CheckpointSave / CheckpointRestore in an
  orbax CheckpointManager) resume it exactly.
  """
  transform = WholeWordMask.for_data(prepared, seed=seed, max_predictions=max_predictions)
  return iter(pipeline.train_dataset(prepared, split, batch_size=batch_size, seed=seed,
                                     process_index=process_index, process_count=process_count,
                                     transform=transform, num_threads=num_threads, prefetch=prefetch))


def make_eval_iterator(prepared: PreparedData, split: str = "heldout", *, batch_size: int, seed: int = 0,
                       process_index: int = 0, process_count: int = 1,
                       max_predictions: Optional[int] = None, num_threads: int = 2,
                       prefetch: int = 4) -> grain.DatasetIterator:
  """One pass over `split` with fixed masks; the last global batch is padded with weight-0 rows."""
  transform = WholeWordMask.for_data(prepared, seed=seed, max_predictions=max_predictions)
  return iter(pipeline.eval_dataset(prepared, split, batch_size=batch_size, process_index=process_index,
                                    process_count=process_count, transform=transform,
                                    num_threads=num_threads, prefetch=prefetch))
