"""Loss functions for the shared train step: they return sums, and `stats["weight"]` to divide by."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


def _mlm_logits(model: nn.Module, params: Any, batch: dict, **kwargs) -> jax.Array:
  segments = batch.get("segment_ids")
  return model.apply(
      {"params": params}, batch["input_ids"], batch.get("token_type_ids"),
      None if segments is None else segments > 0,  # 0 marks padding in packed rows
      masked_positions=batch["masked_positions"], position_ids=batch.get("positions"),
      segment_ids=segments, **kwargs)


def _mlm_sums(logits: jax.Array, batch: dict) -> tuple[jax.Array, dict]:
  labels, weights = batch["masked_labels"], batch["masked_weights"].astype(jnp.float32)
  logits = logits.astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  # Correct = the label's logit is the row maximum. Same as argmax == label except on exact ties,
  # and far cheaper than argmax's variadic reduce on XLA:CPU (~1.5% of a small model's step).
  label_logit = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
  correct = (label_logit >= jnp.max(logits, axis=-1)).astype(jnp.float32)
  return jnp.sum(ce * weights), {"weight": jnp.sum(weights), "accuracy": jnp.sum(correct * weights)}


def masked_lm_loss(model: nn.Module, residual_warmup_steps: int = 0):
  """Gathered-head MLM loss: logits only at `masked_positions`, summed over `masked_weights`.

  With `residual_warmup_steps`, the RoFormerV2 residual factor alpha rises linearly 0 -> 1.
  """
  def loss_fn(params, batch, rng, step):
    alpha = 1.0
    if residual_warmup_steps > 0:
      alpha = jnp.minimum(1.0, step.astype(jnp.float32) / residual_warmup_steps)
    logits = _mlm_logits(model, params, batch, deterministic=False, rngs={"dropout": rng}, residual_scale=alpha)
    return _mlm_sums(logits, batch)
  return loss_fn


def masked_lm_eval(model: nn.Module):
  """Deterministic MLM sums for evaluation: loss, correct predictions and weight."""
  def eval_fn(params, batch):
    loss, stats = _mlm_sums(_mlm_logits(model, params, batch, deterministic=True), batch)
    return dict(stats, loss=loss)
  return eval_fn


def _classifier_logits(model: nn.Module, params: Any, batch: dict, **kwargs) -> jax.Array:
  return model.apply({"params": params}, batch["input_ids"], batch.get("token_type_ids"),
                     batch.get("attention_mask"), **kwargs)


def _classification_sums(logits: jax.Array, batch: dict) -> tuple[jax.Array, dict]:
  labels, weights = batch["labels"], batch["weights"].astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  # argmax, as the written predictions (a tie is one class, not correct for every tied label as the MLM's
  # cheaper `>= max` would count it); over a few classes its cost does not show.
  correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  return jnp.sum(ce * weights), {"weight": jnp.sum(weights), "accuracy": jnp.sum(correct * weights)}


def classification_loss(model: nn.Module):
  """Softmax cross-entropy of a classifier's logits [B, C] against `labels` [B], summed over `weights` [B]
  (1 real example, 0 padding): the loss is the mean over the global batch's examples."""
  def loss_fn(params, batch, rng, step):
    del step
    return _classification_sums(_classifier_logits(model, params, batch, deterministic=False,
                                                   rngs={"dropout": rng}), batch)
  return loss_fn


def classification_eval(model: nn.Module):
  """Deterministic classification sums for evaluation: loss, correct predictions and weight (examples)."""
  def eval_fn(params, batch):
    loss, stats = _classification_sums(_classifier_logits(model, params, batch, deterministic=True), batch)
    return dict(stats, loss=loss)
  return eval_fn
