"""The gated attention unit of FLASH / GAU-α: one GAU replaces a layer's attention and FFN.

  u, v = swish(x W_u), swish(x W_v)            [B, L, e]   e = expansion * hidden
  z = swish(x W_z)                             [B, L, s]   one shared head of size s
  q, k = rope(z γ_q + β_q), rope(z γ_k + β_k)  per-dimension scales and offsets; RoPE per head_size chunk
  A = relu(q kᵀ / √s)² / n_i                   n_i: keys visible to query i (squared-ReLU attention)
  x = Norm(x + α · dropout((u ⊙ A v) W_o))     post-norm, as the RoFormerV2 layers

bert4keras' GAU-α normalises by the number of real tokens; with packed segments n_i counts the
keys of query i's own document. A GAU has about half a Transformer layer's parameters (e = 2d),
which is why FLASH stacks twice as many. Options (`ModelConfig.attention_options`):
gau_expansion (default 2) and gau_key_size (default 128).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from roformer_jax import rope as rope_lib
from roformer_jax.mixers import read_options, register_block

OPTIONS = {"gau_expansion": 2, "gau_key_size": 128}


def gau_options(cfg) -> tuple[int, int]:
  """(expansion, key_size) from cfg.attention_options, validated."""
  opts = read_options(cfg, "gau", OPTIONS, ("gau_expansion", "gau_key_size"))
  if opts["gau_key_size"] % cfg.head_size:
    raise ValueError(f"ModelConfig.attention_options gau_key_size={opts['gau_key_size']} must be a multiple of the "
                     f"head size {cfg.head_size}: RoPE rotates the key in head-size chunks")
  return opts["gau_expansion"], opts["gau_key_size"]


def squared_relu_attention(q: jax.Array, k: jax.Array, visible: jax.Array) -> jax.Array:
  """A [B, Lq, Lk] = relu(q kᵀ / √s)² / (visible keys per query); q, k: [B, L, s]; visible [B, Lq, Lk]."""
  scores = jnp.einsum("bqs,bks->bqk", q, k, preferred_element_type=jnp.float32) / jnp.sqrt(q.shape[-1])
  count = jnp.maximum(jnp.sum(visible, axis=-1, keepdims=True), 1)
  return jnp.where(visible, jax.nn.relu(scores) ** 2, 0.0) / count


@register_block("gau")
class GAU(nn.Module):
  """One gated attention unit + residual + post-norm; called (x, mask, rope, deterministic, residual_scale)."""
  cfg: object

  @nn.compact
  def __call__(self, x, mask, rope, deterministic: bool, residual_scale=1.0):
    from roformer_jax import model as model_lib  # lazy: model imports the mixer registries
    cfg = self.cfg
    expansion, key_size = gau_options(cfg)
    e = expansion * cfg.hidden_size
    uv = jax.nn.swish(model_lib.Dense(cfg, (2, e), ("embed", None, "mlp"), name="uv")(x))
    u, v = uv[..., 0, :], uv[..., 1, :]
    z = jax.nn.swish(model_lib.Dense(cfg, (key_size,), ("embed", "kv"), name="z")(x))
    # GAU-α (bert4keras ScaleOffset) starts γ at 1; FLASH draws it from N(0, 0.02), which leaves the
    # squared ReLU with almost no gradient at initialisation.
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, (None, "kv")),
                       (2, key_size), jnp.float32)
    offset = self.param("offset", nn.with_logical_partitioning(nn.initializers.zeros, (None, "kv")),
                        (2, key_size), jnp.float32)
    zf = z.astype(jnp.float32)
    q = zf * scale[0] + offset[0]
    k = zf * scale[1] + offset[1]
    # The layer's RoPE tables are sized for head_size: rotate each head_size-wide chunk of the shared
    # key with them ([B, L, s] -> [B, L, s / head_size, head_size]); scores stay relative-position only.
    chunks = lambda t: t.reshape(t.shape[:2] + (key_size // cfg.head_size, cfg.head_size))
    q, k = (rope_lib.apply_rope(chunks(t), *rope).reshape(t.shape) for t in (q, k))
    a = squared_relu_attention(q.astype(z.dtype), k.astype(z.dtype), mask.dense()[:, 0])
    a = nn.Dropout(cfg.attention_dropout, deterministic=deterministic)(a)
    o = u * jnp.einsum("bqk,bke->bqe", a.astype(v.dtype), v)
    o = model_lib.Dense(cfg, (cfg.hidden_size,), ("mlp", "embed"), name="output")(o)
    o = nn.Dropout(cfg.hidden_dropout, deterministic=deterministic)(o)
    return model_lib.Norm(cfg, cfg.hidden_size, name="norm")(x + residual_scale * o)
