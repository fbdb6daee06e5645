"""PET's training targets, exactly as the reference builds them (bojone's `sentiment.py`, spec a.2).

Every token of a row, [CLS] and [SEP] included, draws r ~ U[0, 1):

  r < 0.15 * 0.8 (12%)          -> [MASK]              target = the original id
  r < 0.15 * 0.9 (1.5%)         -> kept                target = the original id
  r < 0.15       (1.5%)         -> uniform id in [1, V-1] (any id but [PAD], special ids included)
  otherwise (85%)               -> kept                target = 0 (no prediction)

then a labelled row gets [MASK] at its blank and the label's word as the target there, whatever the
draw was. The loss is the full-vocabulary cross-entropy at every target, averaged over all the
targets of a batch (`scoring.mlm_loss`).

Rows are returned in the gathered form of the shared MLM objective (`roformer_jax.objectives`):
`masked_positions` / `masked_labels` / `masked_weights` [P], the blank first, then the random
targets in position order. P is fixed per run (`default_max_predictions`); a row with more targets
keeps its first P and counts the rest in `masked_overflow` (about 7 standard deviations above the
mean at 128 tokens: never seen in practice, but never silent either).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

MASK_RATE = 0.15
# Cumulative shares of the selected tokens: [0, 0.8) [MASK], [0.8, 0.9) kept, [0.9, 1) random id.
MASK_UPTO, KEEP_UPTO = 0.8, 0.9


def default_max_predictions(seq_len: int, blank_width: int = 1) -> int:
  """Prediction slots per row: the blank, plus the mean number of random targets and 5 standard
  deviations (Binomial(L, 0.15)), rounded up to 8; at most `seq_len`. 48 at L = 128."""
  mean, std = MASK_RATE * seq_len, math.sqrt(MASK_RATE * (1 - MASK_RATE) * seq_len)
  return min(seq_len, 8 * math.ceil((blank_width + mean + 5 * std) / 8))


def random_masking(token_ids: np.ndarray, rng: np.random.Generator, *, mask_id: int, vocab_size: int,
                   rate: float = MASK_RATE) -> tuple[np.ndarray, np.ndarray]:
  """(source, target) int32 [n] for one row of `token_ids` [n] (no padding); target 0 = no prediction.

  The draws are one `rng.random(n)` and one `rng.integers(1, vocab_size, n)`, whatever the data.
  """
  token_ids = np.asarray(token_ids, np.int32)
  r = rng.random(len(token_ids))
  random_ids = rng.integers(1, vocab_size, size=len(token_ids), dtype=np.int32)
  # The reference's thresholds, computed the same way (0.15 * 0.8 is 0.12000000000000001 in float64).
  to_mask, to_keep, selected = r < rate * MASK_UPTO, r < rate * KEEP_UPTO, r < rate
  source = np.where(to_mask, mask_id, np.where(to_keep | ~selected, token_ids, random_ids)).astype(np.int32)
  target = np.where(selected, token_ids, 0).astype(np.int32)
  return source, target


def training_row(token_ids: np.ndarray, rng: Optional[np.random.Generator], *, mask_id: int, vocab_size: int,
                 max_predictions: int, blank_positions: Optional[np.ndarray] = None,
                 label_ids: Optional[np.ndarray] = None, rate: float = MASK_RATE) -> dict[str, np.ndarray]:
  """One training row: random masking (skipped when `rng` is None), then the label forced at the blank.

  Args:
    token_ids: [n] the encoded row, unpadded.
    rng: the row's generator; None: no random masking (the blank is then the only target).
    blank_positions, label_ids: [w] for a labelled row (`PetEncoder.encode` and `label_token_ids[label]`);
      None for an unlabelled one.

  Returns input_ids [n], masked_positions / masked_labels [P] int32, masked_weights [P] float32,
  masked_overflow int32.
  """
  token_ids = np.asarray(token_ids, np.int32)
  if rng is None:
    source, target = token_ids.copy(), np.zeros_like(token_ids)
  else:
    source, target = random_masking(token_ids, rng, mask_id=mask_id, vocab_size=vocab_size, rate=rate)
  first = np.zeros(0, np.int64)
  if blank_positions is not None:
    if label_ids is None or len(label_ids) != len(blank_positions):
      raise ValueError(f"a labelled row needs one label id per blank position, got {label_ids} for {blank_positions}")
    first = np.asarray(blank_positions, np.int64)
    source[first] = mask_id
    target[first] = label_ids
  elif label_ids is not None:
    raise ValueError("label_ids given without blank_positions")
  if np.any(target[first] == 0):
    raise ValueError("a label id is 0 ([PAD]), which the loss would ignore")
  others = np.flatnonzero(target)
  positions = np.concatenate([first, others[~np.isin(others, first)]])
  n = min(len(positions), max_predictions)
  out_pos = np.zeros(max_predictions, np.int32)
  out_lab = np.zeros(max_predictions, np.int32)
  weights = np.zeros(max_predictions, np.float32)
  out_pos[:n], out_lab[:n], weights[:n] = positions[:n], target[positions[:n]], 1.0
  return dict(input_ids=source, masked_positions=out_pos, masked_labels=out_lab, masked_weights=weights,
              masked_overflow=np.int32(len(positions) - n))
