"""JAX's TPU splash-attention kernel behind the attention boundary (the TPU alternative to `pallas`).

Splash takes neither a scale nor RoPE, so q and k are rotated and q pre-scaled here. Its masks are
static, so key padding rides on the runtime segment ids: a padded key gets segment -1, which no
query carries. A query that sees no key at all takes the mean of v outside the kernel, as `softmax`
gives it: splash's saved log-sum-exp folds log(n) into its finite mask value there, which corrupts that
row's backward. Splash has no dropout. On CPU it runs interpreted (tests only).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from roformer_jax import rope as rope_lib
from roformer_jax.attention import AttentionMask, blockwise, register


@functools.lru_cache(maxsize=None)
def _kernel(length: int, heads: int, block: int, interpret: bool):
  from jax.experimental.pallas.ops.tpu import splash_attention as splash
  mask = splash.MultiHeadMask([splash.FullMask((length, length))] * heads)
  sizes = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
                            block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)
  return splash.make_splash_mha_single_device(mask, block_sizes=sizes, interpret=interpret)


@register("splash")
def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask, *,
                     rope: tuple[jax.Array, jax.Array] | None = None, dropout_rate: float = 0.0,
                     dropout_rng: jax.Array | None = None, deterministic: bool = True, block: int = 512,
                     interpret: bool | None = None) -> jax.Array:
  """Exact softmax attention from splash; q, k, v: [B, L, H, D] -> [B, L, H, D].

  Options: block (all splash block sizes, clipped to L; L must be a multiple of it), interpret
  (default: True off TPU). Segment ids must be >= 0.
  """
  del dropout_rng
  if not deterministic and dropout_rate > 0.0:
    raise ValueError(f"attention='splash' has no attention dropout; set ModelConfig.attention_dropout=0 "
                     f"(got {dropout_rate})")
  b, n, h, d = q.shape
  block = min(blockwise.check_block("block", block), n)
  if n % block:
    # Padding would put extra keys into rows with no visible key (splash masks them with a finite value).
    raise ValueError(f"attention='splash': sequence length {n} must be a multiple of attention_options "
                     f"block={block}")
  interpret = (jax.default_backend() != "tpu") if interpret is None else bool(interpret)
  if rope is not None:
    q, k = rope_lib.apply_rope(q, *rope), rope_lib.apply_rope(k, *rope)
  q = (q.astype(jnp.float32) * (1.0 / math.sqrt(d))).astype(q.dtype)
  seg = jnp.zeros((b, n), jnp.int32) if mask.segment_ids is None else mask.segment_ids.astype(jnp.int32)
  seg_kv = jnp.where(mask.key_mask, seg, -1)
  kernel = _kernel(n, h, block, interpret)
  from jax.experimental.pallas.ops.tpu.splash_attention import SegmentIds
  heads_first = lambda x: jnp.swapaxes(x, 1, 2)  # [B, L, H, D] -> [B, H, L, D]
  out = jax.vmap(lambda q, k, v, sq, sk: kernel(q, k, v, segment_ids=SegmentIds(q=sq, kv=sk)))(
      heads_first(q), heads_first(k), heads_first(v), seg, seg_kv)
  out = jnp.swapaxes(out, 1, 2)
  # Rows with no visible key: is the query's segment among the real keys' segments? (O(n log n))
  real = jnp.sort(jnp.where(mask.key_mask, seg, jnp.iinfo(jnp.int32).max), axis=-1)
  idx = jax.vmap(jnp.searchsorted)(real, seg)
  sees_a_key = jnp.take_along_axis(real, jnp.minimum(idx, n - 1), axis=-1) == seg
  mean_v = jnp.mean(v.astype(jnp.float32), axis=1, keepdims=True).astype(out.dtype)
  return jnp.where(sees_a_key[:, :, None, None], out, mean_v)
