"""PET's regimes and fixed-shape batches (numpy): training batches as a pure function of (seed, step),
evaluation batches in order.

The four regimes of kexue 7764 (spec a.3), over the train split of a labelled dataset:

  | regime            | trains on                                                    |
  |-------------------|--------------------------------------------------------------|
  | `zero_shot`       | nothing: the pretrained MLM with the pattern                 |
  | `unsupervised`    | MLM on every train text, no pattern, no label                |
  | `few_shot`        | the K labelled examples, with the pattern                    |
  | `semi_supervised` | the K labelled (pattern) + the other train texts (none), shuffled together |

All training rows get the reference's random masking (`masking`); a labelled row also its label at
the blank. Batch `step` of a run is a function of (seed, step) only: epoch e = step // steps_per_epoch
visits every example once in the order `default_rng((seed, e))` permutes them, and an example's masks
come from `default_rng((seed, e, example))`. A resumed run therefore needs only its step. The last
batch of an epoch is filled with weight-0 rows ([CLS] [SEP]), so each epoch sees every example once,
as the reference's generator does.
"""

from __future__ import annotations

import math
from typing import Iterator, Optional, Sequence

import numpy as np

from roformer_jax.config import ConfigError
from roformer_jax.pet import masking
from roformer_jax.pet.patterns import PetEncoder
from roformer_jax.pet.reviews import LabelledTexts, kshot

REGIMES = ("zero_shot", "unsupervised", "few_shot", "semi_supervised")


def regime_data(regime: str, train: LabelledTexts, k: int, seed: int, mode: str = "stratified",
                key: str = "config.regime") -> tuple[LabelledTexts, tuple[str, ...]]:
  """(labelled examples, unlabelled texts) a regime trains on; see the module docstring.

  `k`, `seed`, `mode` pick the labelled subset (`reviews.kshot`); the unsupervised and zero-shot
  regimes have none.
  """
  if regime not in REGIMES:
    raise ConfigError(f"{key} = {regime!r}; expected one of {list(REGIMES)}")
  if regime in ("zero_shot", "unsupervised"):
    none = train.subset([])
    return none, (train.texts if regime == "unsupervised" else ())
  if k < 1:
    raise ConfigError(f"config.k = {k}: the {regime} regime needs labelled examples (k >= 1)")
  if k > len(train.labels):
    raise ConfigError(f"config.k = {k}: more than the {len(train.labels)} examples of the training split")
  if mode not in ("stratified", "balanced"):
    raise ConfigError(f"config.kshot_mode = {mode!r}; expected 'stratified' or 'balanced'")
  labelled, rest = kshot(train, k, seed, mode)
  return labelled, (rest if regime == "semi_supervised" else ())


def _pad_rows(rows: Sequence[np.ndarray], length: int) -> np.ndarray:
  out = np.zeros((len(rows), length), np.int32)
  for i, r in enumerate(rows):
    out[i, :len(r)] = r
  return out


class PetTrainBatches:
  """Masked training batches of fixed shape for (labelled with the pattern, unlabelled without).

  Each batch: input_ids, token_type_ids [B, L] int32 (L = encoder.max_length); masked_positions,
  masked_labels [B, P] int32; masked_weights [B, P] float32; masked_overflow [B] int32 — the inputs
  of `roformer_jax.objectives.masked_lm_loss` and `scoring.mlm_loss` — and example_index [B] int32
  (labelled examples first, then unlabelled; -1 on filler rows).
  """

  def __init__(self, encoder: PetEncoder, labelled: LabelledTexts, unlabelled: Sequence[str], *,
               batch_size: int, seed: int, vocab_size: Optional[int] = None,
               max_predictions: Optional[int] = None):
    if tuple(labelled.label_names) != encoder.label_names:
      raise ValueError(f"labelled data has labels {list(labelled.label_names)}, "
                       f"the encoder {list(encoder.label_names)}")
    if batch_size < 1:
      raise ConfigError(f"config.batch_size = {batch_size} must be >= 1")
    self.encoder, self.batch_size, self.seed = encoder, batch_size, seed
    # Random ids span the tokenizer's vocab, as the reference (`np.random.choice(tokenizer._vocab_size - 1) + 1`):
    # a model's rows padded for the hardware are ids no text ever gives. `vocab_size` may only narrow that.
    self.vocab_size = min(vocab_size or encoder.tokenizer.vocab_size, encoder.tokenizer.vocab_size)
    self.seq_len = encoder.max_length
    self.max_predictions = max_predictions or masking.default_max_predictions(self.seq_len, encoder.width)
    rows, self._blanks = encoder.encode(labelled.texts)
    self._labels = labelled.labels
    self._rows = rows + encoder.encode_plain(unlabelled)
    self.num_labelled, self.num_examples = len(labelled), len(self._rows)
    if self.num_examples == 0:
      raise ConfigError("nothing to train on: no labelled example and no unlabelled text (see regime_data)")
    self.steps_per_epoch = math.ceil(self.num_examples / batch_size)

  def example(self, index: int, epoch: int) -> dict[str, np.ndarray]:
    """Training row `index` (labelled ones first) as masked in `epoch`."""
    rng = np.random.default_rng((self.seed, epoch, index))
    blank = label_ids = None
    if index < self.num_labelled:
      blank, label_ids = self._blanks[index], self.encoder.label_token_ids[self._labels[index]]
    return masking.training_row(self._rows[index], rng, mask_id=self.encoder.mask_id, vocab_size=self.vocab_size,
                                max_predictions=self.max_predictions, blank_positions=blank, label_ids=label_ids)

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """Batch number `step` (0-based, over all epochs)."""
    epoch, j = divmod(step, self.steps_per_epoch)
    order = np.random.default_rng((self.seed, epoch)).permutation(self.num_examples)
    index = order[j * self.batch_size:(j + 1) * self.batch_size]
    rows = [self.example(int(i), epoch) for i in index]
    filler = np.asarray([self.encoder.tokenizer.cls_id, self.encoder.tokenizer.sep_id], np.int32)
    while len(rows) < self.batch_size:  # weight-0 rows: a valid sequence, nothing to predict
      rows.append(masking.training_row(filler, None, mask_id=self.encoder.mask_id, vocab_size=self.vocab_size,
                                       max_predictions=self.max_predictions))
    out = {"input_ids": _pad_rows([r["input_ids"] for r in rows], self.seq_len)}
    out["example_index"] = np.full(self.batch_size, -1, np.int32)
    out["example_index"][:len(index)] = index
    out["token_type_ids"] = np.zeros_like(out["input_ids"])
    for key in ("masked_positions", "masked_labels", "masked_weights", "masked_overflow"):
      out[key] = np.stack([r[key] for r in rows])
    return out

  def __call__(self, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Endless batches from `start_step` on."""
    step = start_step
    while True:
      yield self.batch(step)
      step += 1


def eval_batches(encoder: PetEncoder, data: LabelledTexts, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
  """`data` in order with the pattern, no masking: input_ids, token_type_ids [B, L]; masked_positions
  [B, w] (the blank); labels [B] int32; weights [B] float32, 0 on the rows that fill the last batch.
  The inputs of `scoring.label_eval`."""
  if tuple(data.label_names) != encoder.label_names:
    raise ValueError(f"data has labels {list(data.label_names)}, the encoder {list(encoder.label_names)}")
  rows, blanks = encoder.encode(data.texts)
  for start in range(0, len(rows), batch_size):
    n = min(batch_size, len(rows) - start)
    idx = np.arange(start, start + batch_size).clip(max=len(rows) - 1)  # fill with copies of the last row
    weights = np.zeros(batch_size, np.float32)
    weights[:n] = 1.0
    ids = _pad_rows([rows[i] for i in idx], encoder.max_length)
    yield {"input_ids": ids, "token_type_ids": np.zeros_like(ids), "masked_positions": blanks[idx],
           "labels": data.labels[idx], "weights": weights}
