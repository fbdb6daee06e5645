"""PET's loss and label scores over MLM logits (JAX; works on numpy inputs too).

Training batches (`batches.PetTrainBatches`) are in the shared MLM objective's gathered form, so
`roformer_jax.objectives.masked_lm_loss(model)` trains PET as it is: its sum over weighted targets
divided by the weight is `mlm_loss` below, the reference's loss (spec a.2).

A label's score is the log-probability that its word fills the blank, with the blank's positions
taken as independent (the reference's product of per-position probabilities, `tnews.py`):

  score(c) = sum_k log softmax(logits[k])[word_c[k]],   prediction = argmax_c score(c)

The softmax is over the full vocabulary, not only the verbalizer's words.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


def mlm_loss(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> jax.Array:
  """Mean full-vocabulary cross-entropy over the weighted targets of a batch.

  logits [..., V], labels [...] int, weights [...] (1 target, 0 padding); 0 if there is no target.
  """
  weights = weights.astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
  total = jnp.sum(weights)
  return jnp.where(total > 0, jnp.sum(ce * weights) / jnp.maximum(total, 1e-9), 0.0)


def label_log_scores(blank_logits: jax.Array, label_token_ids: jax.Array) -> jax.Array:
  """[B, C] log-probability of each label's word at the blank.

  blank_logits [B, w, V] (the MLM logits at the w blank positions), label_token_ids [C, w].
  """
  logp = jax.nn.log_softmax(jnp.asarray(blank_logits, jnp.float32), axis=-1)
  ids = jnp.asarray(label_token_ids, jnp.int32)
  if ids.ndim != 2 or ids.shape[1] != logp.shape[1]:
    raise ValueError(f"label_token_ids {ids.shape} must be [labels, {logp.shape[1]}] for blank logits {logp.shape}")
  per_position = jnp.take_along_axis(logp, jnp.broadcast_to(ids.T[None], (logp.shape[0],) + ids.T.shape), axis=2)
  return per_position.sum(axis=1)


def predict_labels(blank_logits: jax.Array, label_token_ids: jax.Array) -> jax.Array:
  """[B] class index with the highest `label_log_scores` (ties to the lower index)."""
  return jnp.argmax(label_log_scores(blank_logits, label_token_ids), axis=-1)


def label_eval(model: nn.Module, label_token_ids: Any):
  """eval_fn(params, batch) -> {"correct", "weight", "loss"} sums for an eval batch of
  `batches.eval_batches`: accuracy is correct / weight, loss (the CE of the true label's word among
  all labels' scores, a dev-loss signal) is loss / weight."""
  ids = jnp.asarray(label_token_ids, jnp.int32)

  def eval_fn(params, batch):
    logits = model.apply({"params": params}, batch["input_ids"], batch.get("token_type_ids"),
                         masked_positions=batch["masked_positions"], deterministic=True)
    scores = label_log_scores(logits, ids)
    weights = batch["weights"].astype(jnp.float32)
    correct = (jnp.argmax(scores, -1) == batch["labels"]).astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(scores, batch["labels"])
    return {"correct": jnp.sum(correct * weights), "weight": jnp.sum(weights), "loss": jnp.sum(ce * weights)}
  return eval_fn
