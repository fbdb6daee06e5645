"""Greedy and beam-search decoding for a UniLM seq2seq RoFormer, with a key/value cache; jitted and batched.

Layout (bert4keras's `AutoRegressiveDecoder` for UniLM): row b's source, [CLS] src [SEP] with segment 0,
holds slots 0..n_b-1 of a [B, T] sequence (T = source width + max_new_tokens); generated token t goes to
slot n_b + t with segment 1, so RoPE positions and the UniLM mask are those of the training sequence
[CLS] src [SEP] tgt. The first token is scored at the source's last slot (its [SEP]).

Two interchangeable step functions drive the same search loops:
  * cached (default): the source is encoded once into every layer's key/value cache (`decode=True`
    model); each step runs the stack on one new token per row and attends to the cache;
  * `use_cache=False`: every step re-encodes the whole prefix with the UniLM mask and reads the logits
    at the newest slot: the definition the cache must reproduce (tests), and the benchmark baseline.

Finished rows (after `end_id`) emit `pad_id` and stop changing; the loop ends once every row (beam) is
finished or `max_new_tokens` are out. Beam scores are sum(log p) / length ** length_penalty, length
counting the generated tokens up to and including `end_id`; candidates are ranked by that score, so
`beam_size=1` is greedy for any length_penalty.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from roformer_jax.config import ModelConfig
from roformer_jax.model import RoFormerForMaskedLM

Array = jax.Array
_NEG = -1e30  # a finite "impossible": -inf would turn 0 * score and -inf - -inf into NaN


class Decoded(NamedTuple):
  """tokens [B, (K,) N] (pad after end_id); lengths [B, (K,)] generated tokens incl. end_id; log_prob: their
  summed log-probabilities; score: log_prob / lengths ** length_penalty (greedy: length_penalty 0)."""
  tokens: Array
  lengths: Array
  log_prob: Array
  score: Array


# ----------------------------------------------------------------------------------------------
# Step functions: prefill(params, source_ids) -> (logits [B, V], state); step(params, state, tokens [B], t)
# -> (logits [B, V], state) for generated token t fed at slot n_b + t. `reorder(state, index)` picks rows.
# ----------------------------------------------------------------------------------------------
def _source_lengths(source_ids: Array, pad_id: int) -> Array:
  return jnp.sum(source_ids != pad_id, axis=1).astype(jnp.int32)


def init_cache(cfg: ModelConfig, batch: int, length: int) -> Any:
  """An empty decoding cache of `length` slots for `batch` rows (zeros; shapes from an abstract init)."""
  model = RoFormerForMaskedLM(cfg, decode=True)
  ids = jnp.ones((batch, length), jnp.int32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), ids, position_ids=jnp.arange(length)[None],
                                             causal_ids=jnp.zeros_like(ids)))["cache"]
  return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def reorder_cache(cache: Any, index: Array) -> Any:
  """Rows `index` of a decoding cache (beam search). Scanned layers stack their cache on a leading layer axis."""
  def take(path, x):
    scanned = any(getattr(p, "key", None) == "layers" for p in path)
    return jnp.take(x, index, axis=1 if scanned else 0)
  return jax.tree_util.tree_map_with_path(take, cache)


def _cached_steps(cfg: ModelConfig, source_ids: Array, max_new_tokens: int, pad_id: int):
  model = RoFormerForMaskedLM(cfg, decode=True)
  batch, width = source_ids.shape
  n = _source_lengths(source_ids, pad_id)

  def prefill(params):
    cache = init_cache(cfg, batch, width + max_new_tokens)
    # The key mask from pad_id (not the config's pad_token_id), as the re-encoding path and `n` have it.
    logits, new = model.apply({"params": params, "cache": cache}, source_ids, jnp.zeros_like(source_ids),
                              source_ids != pad_id, position_ids=jnp.arange(width)[None],
                              causal_ids=jnp.zeros_like(source_ids), masked_positions=(n - 1)[:, None],
                              mutable=["cache"])
    return logits[:, 0], (new["cache"], n)

  def step(params, state, tokens, t):
    cache, lengths = state
    ids = tokens[:, None]
    logits, new = model.apply({"params": params, "cache": cache}, ids, jnp.ones_like(ids), ids != pad_id,
                              position_ids=(lengths + t)[:, None], causal_ids=jnp.full_like(ids, t + 1),
                              mutable=["cache"])
    return logits[:, 0], (new["cache"], lengths)

  def reorder(state, index):
    return reorder_cache(state[0], index), state[1][index]

  return prefill, step, reorder


def _recompute_steps(cfg: ModelConfig, source_ids: Array, max_new_tokens: int, pad_id: int):
  model = RoFormerForMaskedLM(cfg)
  batch, width = source_ids.shape
  n = _source_lengths(source_ids, pad_id)

  def run(params, ids, types, at):
    return model.apply({"params": params}, ids, types, ids != pad_id, unilm=True, masked_positions=at[:, None])[:, 0]

  def prefill(params):
    ids = jnp.pad(source_ids, ((0, 0), (0, max_new_tokens)), constant_values=pad_id)
    types = jnp.zeros_like(ids)
    return run(params, ids, types, n - 1), (ids, types, n)

  def step(params, state, tokens, t):
    ids, types, lengths = state
    at = lengths + t
    rows = jnp.arange(ids.shape[0])  # B, or B * beam_size after `reorder`
    ids, types = ids.at[rows, at].set(tokens), types.at[rows, at].set(1)
    return run(params, ids, types, at), (ids, types, lengths)

  def reorder(state, index):
    return tuple(x[index] for x in state)

  return prefill, step, reorder


def _steps(cfg, source_ids, max_new_tokens, pad_id, use_cache):
  make = _cached_steps if use_cache else _recompute_steps
  return make(cfg, source_ids, max_new_tokens, pad_id)


# ----------------------------------------------------------------------------------------------
# Searches
# ----------------------------------------------------------------------------------------------
# end_id, pad_id and length_penalty are traced: changing them does not recompile.
@functools.partial(jax.jit, static_argnames=("cfg", "max_new_tokens", "use_cache"))
def _greedy(cfg, params, source_ids, *, max_new_tokens, end_id, pad_id, use_cache):
  prefill, step, _ = _steps(cfg, source_ids, max_new_tokens, pad_id, use_cache)
  batch = source_ids.shape[0]
  logits, state = prefill(params)
  lp = jax.nn.log_softmax(logits.astype(jnp.float32))
  y = jnp.argmax(lp, axis=-1).astype(jnp.int32)
  tokens = jnp.full((batch, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(y)
  log_prob = jnp.take_along_axis(lp, y[:, None], 1)[:, 0]
  finished = y == end_id
  lengths = jnp.ones((batch,), jnp.int32)

  def cond(carry):
    t, _, _, finished, *_ = carry
    return (t < max_new_tokens) & ~jnp.all(finished)

  def body(carry):
    t, y, tokens, finished, lengths, log_prob, state = carry
    logits, state = step(params, state, y, t - 1)
    lp = jax.nn.log_softmax(logits.astype(jnp.float32))
    nxt = jnp.argmax(lp, axis=-1).astype(jnp.int32)
    y = jnp.where(finished, pad_id, nxt)
    log_prob = log_prob + jnp.where(finished, 0.0, jnp.take_along_axis(lp, nxt[:, None], 1)[:, 0])
    lengths = lengths + (~finished).astype(jnp.int32)
    tokens = tokens.at[:, t].set(y)
    return t + 1, y, tokens, finished | (y == end_id), lengths, log_prob, state

  carry = (jnp.int32(1), y, tokens, finished, lengths, log_prob, state)
  _, _, tokens, _, lengths, log_prob, _ = jax.lax.while_loop(cond, body, carry)
  return Decoded(tokens, lengths, log_prob, log_prob)


@functools.partial(jax.jit, static_argnames=("cfg", "beam_size", "max_new_tokens", "use_cache"))
def _beam(cfg, params, source_ids, *, beam_size, max_new_tokens, end_id, pad_id, length_penalty, use_cache):
  prefill, step, reorder = _steps(cfg, source_ids, max_new_tokens, pad_id, use_cache)
  batch, k = source_ids.shape[0], beam_size
  logits, state = prefill(params)
  lp = jax.nn.log_softmax(logits.astype(jnp.float32))
  vocab = lp.shape[-1]
  log_prob, y = jax.lax.top_k(lp, k)  # step 0: every beam starts from the one source; length 1 for all
  y = y.astype(jnp.int32)
  state = reorder(state, jnp.repeat(jnp.arange(batch), k))  # [B] -> [B * K] rows, beam-major per source
  tokens = jnp.full((batch, k, max_new_tokens), pad_id, jnp.int32).at[:, :, 0].set(y)
  finished = y == end_id
  lengths = jnp.ones((batch, k), jnp.int32)
  pad_only = jnp.where(jnp.arange(vocab) == pad_id, 0.0, _NEG)  # a finished beam's one continuation

  def cond(carry):
    t, _, _, finished, *_ = carry
    return (t < max_new_tokens) & ~jnp.all(finished)

  def body(carry):
    t, y, tokens, finished, lengths, log_prob, state = carry
    logits, state = step(params, state, y.reshape(-1), t - 1)
    lp = jax.nn.log_softmax(logits.astype(jnp.float32)).reshape(batch, k, vocab)
    lp = jnp.where(finished[..., None], pad_only, lp)
    cand = log_prob[..., None] + lp  # [B, K, V]
    cand_len = jnp.where(finished, lengths, t + 1)
    norm = cand / cand_len[..., None].astype(jnp.float32) ** length_penalty
    _, flat = jax.lax.top_k(norm.reshape(batch, k * vocab), k)
    parent, y = flat // vocab, (flat % vocab).astype(jnp.int32)
    pick = lambda x: jnp.take_along_axis(x, parent, 1)
    log_prob = jnp.take_along_axis(cand.reshape(batch, -1), flat, 1)
    lengths, finished = pick(cand_len), pick(finished) | (y == end_id)
    tokens = jnp.take_along_axis(tokens, parent[..., None], 1).at[:, :, t].set(y)
    state = reorder(state, (jnp.arange(batch)[:, None] * k + parent).reshape(-1))
    return t + 1, y, tokens, finished, lengths, log_prob, state

  carry = (jnp.int32(1), y, tokens, finished, lengths, log_prob, state)
  _, _, tokens, _, lengths, log_prob, _ = jax.lax.while_loop(cond, body, carry)
  score = log_prob / lengths.astype(jnp.float32) ** length_penalty
  return Decoded(tokens, lengths, log_prob, score)


def _check_max_new_tokens(max_new_tokens: int) -> None:
  if max_new_tokens < 1:  # the first token is always generated (and counted in `lengths`)
    raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")


def _cfg(model: RoFormerForMaskedLM | ModelConfig) -> ModelConfig:
  return model if isinstance(model, ModelConfig) else model.cfg


def greedy_decode(model: RoFormerForMaskedLM | ModelConfig, params: Any, source_ids: Array, *, max_new_tokens: int,
                  end_id: int, pad_id: int = 0, use_cache: bool = True) -> Decoded:
  """Greedy generation for each row of `source_ids` [B, S] ([CLS] src [SEP], right-padded with pad_id).

  Returns `Decoded` with tokens [B, max_new_tokens]. `params`: the (unboxed) RoFormerForMaskedLM params."""
  _check_max_new_tokens(max_new_tokens)
  return _greedy(_cfg(model), params, jnp.asarray(source_ids, jnp.int32), max_new_tokens=max_new_tokens,
                 end_id=jnp.int32(end_id), pad_id=jnp.int32(pad_id), use_cache=use_cache)


def beam_search(model: RoFormerForMaskedLM | ModelConfig, params: Any, source_ids: Array, *, beam_size: int,
                max_new_tokens: int, end_id: int, pad_id: int = 0, length_penalty: float = 0.0,
                use_cache: bool = True) -> Decoded:
  """Beam search; tokens [B, beam_size, max_new_tokens], beams sorted best first by `score`
  (log_prob / length ** length_penalty; 0 = no length normalisation, 1 = mean log-probability)."""
  if beam_size < 1:
    raise ValueError(f"beam_size must be >= 1, got {beam_size}")
  _check_max_new_tokens(max_new_tokens)
  return _beam(_cfg(model), params, jnp.asarray(source_ids, jnp.int32), beam_size=beam_size,
               max_new_tokens=max_new_tokens, end_id=jnp.int32(end_id), pad_id=jnp.int32(pad_id),
               length_penalty=jnp.float32(length_penalty), use_cache=use_cache)

