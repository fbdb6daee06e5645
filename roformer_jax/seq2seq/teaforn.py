"""TeaForN (Goodman et al., EMNLP 2020; kexue 7818) on a UniLM RoFormer: teacher forcing N steps ahead.

finetune-spec §e. Pass 1 is ordinary teacher forcing on [CLS] src [SEP] tgt [SEP] (segment 0 source, 1
target) under the UniLM mask. Pass k >= 2 runs the same stack (shared weights) on the same sequence,
except that the input vector at every target position t (segment 1) is the final hidden state of pass
k - 1 at position t - 1, i.e. after the last post-norm, in the same normalised space as the embedding
layer's output (§e.2). Not through the output layer: the paper's "expected embedding" variant was
unstable. The source inputs, and the [SEP] that starts generation (the last source token), keep their
embeddings. Gradients flow through the re-fed states (no stop_gradient): that is the method.

The loss is sum_k lambda_k * CE_k, CE_k being bert4keras's UniLM cross-entropy (`seq2seq_cross_entropy`)
of pass k's logits; N = 1 is exactly plain teacher forcing. Decoding is unchanged (pass 1 only).

Source activations: the source never attends to the target under the UniLM mask, and its inputs are the
same in every pass, so every layer's source rows are too. Given `target_rows` (every target position of
each row), passes 2..N compute only those rows, reading the source rows of each layer from pass 1
(`RoFormerModel.layer_states`): queries, the output projection and the FFN run on the target only, which
saves about source/(source + target) of passes 2..N. Exact only when pass k draws no dropout of its own
(deterministic, or rates 0): with dropout each pass's source would see different noise, so it is then
recomputed. Without `target_rows` each pass is a full forward (also exact).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp

from roformer_jax.config import ModelConfig
from roformer_jax.model import RoFormerForMaskedLM

Array = jax.Array


def seq2seq_cross_entropy(logits: Array, input_ids: Array, token_type_ids: Array,
                          attention_mask: Array | None = None, pad_id: int = 0) -> Array:
  """bert4keras's UniLM loss: logits at i score token i + 1 wherever that token is a real target (segment 1);
  the mean over those tokens of -log p, in float32. logits [B, L, V]; ids, types, mask [B, L]."""
  if attention_mask is None:
    attention_mask = input_ids != pad_id
  weight = ((token_type_ids[:, 1:] == 1) & attention_mask[:, 1:].astype(bool)).astype(jnp.float32)
  lp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(lp, input_ids[:, 1:, None], axis=-1)[..., 0]
  return jnp.sum(nll * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def refeed(embeds: Array, hidden: Array, token_type_ids: Array, attention_mask: Array) -> Array:
  """Pass k's inputs: `embeds` [B, L, H], with every real target position t replaced by hidden[:, t - 1]."""
  shifted = jnp.pad(hidden[:, :-1], ((0, 0), (1, 0), (0, 0)))
  target = (token_type_ids == 1) & attention_mask.astype(bool)
  return jnp.where(target[..., None], shifted.astype(embeds.dtype), embeds)


def reuses_source(cfg: ModelConfig, deterministic: bool) -> bool:
  """Whether passes 2..N may read the source rows from pass 1 exactly: no dropout noise of their own."""
  return deterministic or (cfg.hidden_dropout == 0 and cfg.attention_dropout == 0)


def teaforn_passes(model: RoFormerForMaskedLM, params: Any, input_ids: Array, token_type_ids: Array,
                   attention_mask: Array | None = None, *, num_passes: int, deterministic: bool = True,
                   dropout_rng: Array | None = None, residual_scale: Array | float = 1.0,
                   target_rows: Array | None = None) -> list[tuple[Array, Array]]:
  """[(hidden [B, L, H], logits [B, L, V]) for pass 1..N]. Dropout (when not deterministic) is drawn anew
  for each pass from `dropout_rng` folded with the pass index.

  target_rows [B, T]: every target (segment 1) position of each row, padded with L; given (and with no
  dropout), passes 2..N recompute only those rows (see the module docstring). It must list every target
  position: one left out would keep pass 1's state there."""
  if num_passes < 1:
    raise ValueError(f"TeaForN needs num_passes >= 1, got {num_passes}")
  if attention_mask is None:
    attention_mask = input_ids != model.cfg.pad_token_id
  variables = {"params": params}

  def rngs(k):
    return {} if deterministic else {"dropout": jax.random.fold_in(dropout_rng, k)}

  kw = dict(unilm=True, deterministic=deterministic, residual_scale=residual_scale)
  if num_passes > 1 and target_rows is not None and reuses_source(model.cfg, deterministic):
    states = model.apply(variables, input_ids, token_type_ids, attention_mask, rngs=rngs(0),
                         method=RoFormerForMaskedLM.layer_states, **kw)
    # Here the head's dropout (v2) has rate 0 or is off: reuses_source holds.
    head = lambda h: model.apply(variables, h, method=RoFormerForMaskedLM.head)
    out = [(states[-1], head(states[-1]))]
    embeds = model.apply(variables, input_ids, token_type_ids, deterministic, method=RoFormerForMaskedLM.embed)
    for k in range(1, num_passes):
      x = refeed(embeds, out[-1][0], token_type_ids, attention_mask)
      h = model.apply(variables, input_ids, token_type_ids, attention_mask, inputs_embeds=x, rows=target_rows,
                      context=states, method=RoFormerForMaskedLM.layer_states, **kw)[-1]
      out.append((h, head(h)))
    return out
  out = [model.apply(variables, input_ids, token_type_ids, attention_mask, rngs=rngs(0),
                     method=RoFormerForMaskedLM.hidden_and_logits, **kw)]
  if num_passes > 1:
    embeds = model.apply(variables, input_ids, token_type_ids, deterministic, rngs=rngs(num_passes),
                         method=RoFormerForMaskedLM.embed)
    for k in range(1, num_passes):
      x = refeed(embeds, out[-1][0], token_type_ids, attention_mask)
      out.append(model.apply(variables, input_ids, token_type_ids, attention_mask, inputs_embeds=x, rngs=rngs(k),
                             method=RoFormerForMaskedLM.hidden_and_logits, **kw))
  return out


def teaforn_loss(model: RoFormerForMaskedLM, params: Any, input_ids: Array, token_type_ids: Array,
                 attention_mask: Array | None = None, *, num_passes: int = 1, weights: Sequence[float] | None = None,
                 deterministic: bool = True, dropout_rng: Array | None = None,
                 residual_scale: Array | float = 1.0) -> tuple[Array, Array]:
  """(sum_k weights[k] * CE_k, the per-pass CE_k [N]). weights (lambda_k) default to 1 for every pass."""
  weights = (1.0,) * num_passes if weights is None else tuple(weights)
  if len(weights) != num_passes:
    raise ValueError(f"TeaForN: {len(weights)} weights for num_passes={num_passes}")
  if attention_mask is None:
    attention_mask = input_ids != model.cfg.pad_token_id
  passes = teaforn_passes(model, params, input_ids, token_type_ids, attention_mask, num_passes=num_passes,
                          deterministic=deterministic, dropout_rng=dropout_rng, residual_scale=residual_scale)
  per_pass = jnp.stack([seq2seq_cross_entropy(logits, input_ids, token_type_ids, attention_mask)
                        for _, logits in passes])
  total = per_pass[0] * weights[0]
  for k in range(1, num_passes):
    total = total + per_pass[k] * weights[k]
  return total, per_pass


def teaforn_loss_at(model: RoFormerForMaskedLM, params: Any, input_ids: Array, token_type_ids: Array,
                    attention_mask: Array, positions: Array, position_mask: Array, *, num_passes: int = 1,
                    weights: Sequence[float] | None = None, deterministic: bool = True,
                    dropout_rng: Array | None = None, residual_scale: Array | float = 1.0,
                    target_rows: Array | None = None) -> tuple[Array, Array]:
  """`teaforn_loss` with the LM head run only at `positions` [B, P] (where `position_mask` [B, P] is 1): the
  positions whose next token is a target. With every such position listed once it is the same loss; the
  head (hidden x vocab, most of a small model's cost) then runs on the target half of the sequence only.
  Under jit the full-sequence logits `teaforn_passes` also returns are unused and compiled away.
  `target_rows`: as `teaforn_passes` (source reuse); with every target position listed once in `positions`
  that is `where(position_mask, positions + 1, L)`."""
  weights = (1.0,) * num_passes if weights is None else tuple(weights)
  if len(weights) != num_passes:
    raise ValueError(f"TeaForN: {len(weights)} weights for num_passes={num_passes}")
  passes = teaforn_passes(model, params, input_ids, token_type_ids, attention_mask, num_passes=num_passes,
                          deterministic=deterministic, dropout_rng=dropout_rng, residual_scale=residual_scale,
                          target_rows=target_rows)
  labels = jnp.take_along_axis(input_ids, jnp.minimum(positions + 1, input_ids.shape[1] - 1), axis=1)
  w = position_mask.astype(jnp.float32)
  per_pass = []
  for k, (hidden, _) in enumerate(passes):
    h = jnp.take_along_axis(hidden, positions[..., None], axis=1)
    # The head's own dropout (v2), drawn from pass k's key as the full-sequence head in `teaforn_passes` is.
    rngs = {} if deterministic else {"dropout": jax.random.fold_in(dropout_rng, k)}
    logits = model.apply({"params": params}, h, deterministic, rngs=rngs, method=RoFormerForMaskedLM.head)
    lp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(lp, labels[..., None], axis=-1)[..., 0]
    per_pass.append(jnp.sum(nll * w) / jnp.maximum(jnp.sum(w), 1.0))
  per_pass = jnp.stack(per_pass)
  total = per_pass[0] * weights[0]
  for k in range(1, num_passes):
    total = total + per_pass[k] * weights[k]
  return total, per_pass
