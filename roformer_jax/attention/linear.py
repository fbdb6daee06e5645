"""Kernelised linear attention (Katharopoulos et al. 2020), non-causal, φ = elu + 1, with RoPE.

out_i = Σ_j (R_i φ(q_i))·(R_j φ(k_j)) v_j / Σ_j φ(q_i)·φ(k_j), computed right to left as
R φ(Q) ((R φ(K))ᵀ V) in O(n·d·d_head). RoPE rotates only the numerator, as the RoPE post does for
linear attention: the rotated products can be negative, the denominator must stay positive.
Masked keys get φ(k) = 0. A query that sees no key returns 0 (not the reference's uniform average).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from roformer_jax import rope as rope_lib
from roformer_jax.attention import AttentionMask, register

EPS = 1e-6  # keeps rows with no visible key at 0 instead of 0 / 0


def feature_map(x: jax.Array) -> jax.Array:
  return jax.nn.elu(x) + 1.0


def _attend(phi_q, num_q, phi_k, num_k, v):
  """One group of mutually visible tokens: [B, L, H, D] each -> numerator [B, L, H, Dv], denominator [B, L, H]."""
  kv = jnp.einsum("blhd,blhe->bhde", num_k, v)
  num = jnp.einsum("blhd,bhde->blhe", num_q, kv)
  den = jnp.einsum("blhd,bhd->blh", phi_q, phi_k.sum(axis=1))
  return num, den


@register("linear")
def linear_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask, *,
                     rope: tuple[jax.Array, jax.Array] | None = None, dropout_rate: float = 0.0,
                     dropout_rng: jax.Array | None = None, deterministic: bool = True,
                     max_segments: int = 16) -> jax.Array:
  """Linear attention; q, k, v: [B, L, H, D] -> [B, L, H, D]. Computed in float32.

  Attention dropout does not apply (there is no attention matrix) and is ignored. With packed
  `segment_ids`, ids must lie in [0, max_segments) (`ModelConfig.attention_options`): each segment
  is one more O(n) pass; tokens with an id outside that range come out NaN rather than silently wrong.
  """
  del dropout_rate, dropout_rng, deterministic
  dtype = v.dtype
  q, k, v = (t.astype(jnp.float32) for t in (q, k, v))
  phi_q = feature_map(q)
  phi_k = feature_map(k) * mask.key_mask[:, :, None, None]
  num_q, num_k = phi_q, phi_k
  if rope is not None:
    num_q, num_k = rope_lib.apply_rope(phi_q, *rope), rope_lib.apply_rope(phi_k, *rope)
  if mask.segment_ids is None:
    num, den = _attend(phi_q, num_q, phi_k, num_k, v)
  else:
    if not isinstance(max_segments, int) or max_segments <= 0:
      raise ValueError(f"ModelConfig.attention_options max_segments={max_segments!r} must be a positive int")
    seg = mask.segment_ids

    def one_segment(carry, s):
      inside = (seg == s)[:, :, None, None]
      num, den = _attend(phi_q, num_q, phi_k * inside, num_k * inside, v)
      return (carry[0] + num * inside, carry[1] + den * inside[..., 0]), None

    zeros = (jnp.zeros(v.shape, jnp.float32), jnp.zeros(v.shape[:3], jnp.float32))
    (num, den), _ = jax.lax.scan(one_segment, zeros, jnp.arange(max_segments))
    in_range = ((seg >= 0) & (seg < max_segments))[:, :, None]
    den = jnp.where(in_range, den, jnp.nan)
  return (num / (den[..., None] + EPS)).astype(dtype)
