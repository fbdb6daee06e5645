"""Rotary position embedding, exactly as bert4keras and the PyTorch ports apply it.

Pairs are interleaved, (x[2i], x[2i+1]) rotated by angle m * base^(-2i/d), positions counted
from 0. Tables are computed in float32 on the fly for any length or explicit position ids:
there is no maximum-length table. This one implementation serves the encoder's attention
and the GlobalPointer heads.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def rope_angles(positions: jax.Array, dim: int, base: float = 10000.0) -> tuple[jax.Array, jax.Array]:
  """sin and cos of the rotation angles, float32, shape positions.shape + (dim // 2,)."""
  if dim % 2:
    raise ValueError(f"RoPE needs an even dimension, got {dim}")
  # float32 throughout: at 1536 tokens the angle is ~1535 rad, where bf16/fp16 spacing is >= 1.
  inv_freq = base ** (-jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)
  angles = positions.astype(jnp.float32)[..., None] * inv_freq
  return _materialised(jnp.sin(angles)), _materialised(jnp.cos(angles))


def _materialised(t: jax.Array) -> jax.Array:
  """t, computed once. XLA:CPU fuses an elementwise producer into each consumer, so every rotation would
  recompute sin and cos for every head and element (measured: 3 rotations of [8, 128, 6, 64] take 3.8 ms
  that way, 0.7 ms this way); optimisation barriers do not survive its pipeline. A product with the
  identity is a matmul, which ends the fusion, and is exact: one nonzero term per output, times 1.
  Other platforms' compilers do not duplicate transcendental producers, and get t as it is."""
  def identity_product(t):
    flat = t.reshape(-1, t.shape[-1])
    eye = jnp.eye(t.shape[-1], dtype=t.dtype)
    return jnp.dot(flat, eye, precision=jax.lax.Precision.HIGHEST).reshape(t.shape)
  return jax.lax.platform_dependent(t, cpu=identity_product, default=lambda t: t)


def apply_rope(x: jax.Array, sin: jax.Array, cos: jax.Array) -> jax.Array:
  """Rotates interleaved pairs of x [..., length, heads, dim] by tables [..., length, dim // 2].

  The rotation is done in float32 and cast back to x's dtype.
  """
  dtype = x.dtype
  x = x.astype(jnp.float32)
  x1, x2 = x[..., 0::2], x[..., 1::2]
  sin, cos = sin[..., None, :], cos[..., None, :]  # broadcast over heads
  out = jnp.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.reshape(x.shape).astype(dtype)


def default_positions(batch: int, length: int) -> jax.Array:
  return jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
