"""Exact softmax attention, the einsum reference every other variant is tested against."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from roformer_jax import rope as rope_lib
from roformer_jax.attention import AttentionMask, register


@register("softmax")
def softmax_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask, *,
                      rope: tuple[jax.Array, jax.Array] | None = None, dropout_rate: float = 0.0,
                      dropout_rng: jax.Array | None = None, deterministic: bool = True) -> jax.Array:
  """softmax(rope(q) rope(k)^T / sqrt(d) + mask) v; q, k, v: [B, L, H, D] -> [B, L, H, D]."""
  if rope is not None:
    q, k = rope_lib.apply_rope(q, *rope), rope_lib.apply_rope(k, *rope)
  scale = q.shape[-1] ** -0.5
  # Scores accumulate and softmax in float32 whatever the compute dtype.
  scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
  # A finite minimum (not -inf) keeps fully masked rows finite, as the ports' additive masks do.
  scores = jnp.where(mask.dense(), scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1)
  if not deterministic and dropout_rate > 0.0:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, probs.shape)
    probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0)
  return jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v, preferred_element_type=jnp.float32).astype(v.dtype)
