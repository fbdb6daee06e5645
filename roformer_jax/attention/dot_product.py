"""`jax.nn.dot_product_attention`: XLA's fused path, or cuDNN flash attention on GPU.

implementation=None (the default) is XLA everywhere; "cudnn" asks for cuDNN's flash attention and raises
where it cannot run (no cuDNN, float32, head size over 128/256, ...). `cudnn_attention` is that path, also
what `softmax` runs on NVIDIA GPUs in bf16 (see `cudnn_applies`). It takes everything the other exact
variants take, in training too:
  * packed documents (segment ids) and any key padding, as one [B, 1, Lq, Lk] mask that cuDNN adds as a
    bias (shared by the heads; its gradient is not used). Nothing is assumed about where padding sits;
  * queries at a subset of the positions (the pruned last layer's P masked rows): the query count is
    padded to a multiple of 64, cuDNN's query tile (it refuses e.g. 77), and the extra rows dropped. They
    get a zero cotangent, so they add nothing to dk and dv;
  * rows that see no key return the mean of v, with the reference's gradients (to v only), as
    `reference_attention`'s finite fill gives; cuDNN's own answer there (its bias is finite too, so the
    real scores decide) is replaced.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from roformer_jax import rope as rope_lib
from roformer_jax.attention import AttentionMask, register

IMPLEMENTATIONS = (None, "xla", "cudnn")
CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)
_Q_TILE = 64


@functools.cache
def cudnn_available() -> bool:
  """Whether this JAX has its CUDA plugin with cuDNN (a GPU need not be present: lowering for CUDA works)."""
  try:
    from jax._src.cudnn import fused_attention_stablehlo as fa
    fa.check_cudnn_version()
    return True
  except Exception:  # noqa: BLE001  no plugin, no cuDNN, or a JAX without this module
    return False


def cudnn_applies(q: jax.Array, dropout: bool) -> bool:
  """Whether `cudnn_attention` can take these operands: bf16/fp16, head size a multiple of 8 up to 128, no
  dropout (its RNG is not ours), and a JAX with cuDNN. Decided at trace time."""
  d = q.shape[-1]
  return (q.dtype in CUDNN_DTYPES and not dropout and d % 8 == 0 and d <= 128 and cudnn_available())


def _flash(q, k, v, visible):
  """cuDNN's kernel (a [B, 1, Lq, Lk] boolean mask becomes its additive bias, shared by the heads)."""
  return jax.nn.dot_product_attention(q, k, v, mask=visible, implementation="cudnn")


def cudnn_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask, *,
                    rope: tuple[jax.Array, jax.Array] | None = None,
                    query_rope: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
  """Exact softmax attention through cuDNN's flash kernel; q [B, Lq, H, D] (Lq = Lk, or a subset of the
  positions with `query_rope` and `mask.query_segment_ids`), k, v [B, Lk, H, D]; bf16 or fp16."""
  if q.dtype not in CUDNN_DTYPES:
    raise ValueError(f"cuDNN flash attention takes bfloat16 or float16 only, got {q.dtype}: set "
                     "ModelConfig.dtype='bfloat16', or another attention implementation for float32")
  if rope is not None:
    q, k = rope_lib.apply_rope(q, *(query_rope or rope)), rope_lib.apply_rope(k, *rope)
  lq = q.shape[1]
  visible = jnp.broadcast_to(mask.dense(), (q.shape[0], 1, lq, k.shape[1]))
  sees_any = jnp.any(visible, axis=-1)[:, 0, :, None, None]  # [B, Lq, 1, 1]
  pad_q, pad_k = -lq % _Q_TILE, k.shape[1] % 2  # (cuDNN wants an even key count with a bias)
  if pad_q:
    q = jnp.pad(q, ((0, 0), (0, pad_q), (0, 0), (0, 0)))
    visible = jnp.pad(visible, ((0, 0), (0, 0), (0, pad_q), (0, 0)), constant_values=True)
  if pad_k:
    k, v_in = (jnp.pad(t, ((0, 0), (0, pad_k), (0, 0), (0, 0))) for t in (k, v))
    visible = jnp.pad(visible, ((0, 0), (0, 0), (0, 0), (0, pad_k)), constant_values=False)
  else:
    v_in = v
  out = _flash(q, k, v_in, visible)[:, :lq]
  # Rows that see no key: the reference's uniform average over every key, gradient to v alone.
  uniform = jnp.mean(v.astype(jnp.float32), axis=1, keepdims=True).astype(v.dtype)
  return jnp.where(sees_any, out, uniform)


@register("dot_product", query_subset=True, causal_ids=True)
def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask, *,
                          rope: tuple[jax.Array, jax.Array] | None = None, dropout_rate: float = 0.0,
                          dropout_rng: jax.Array | None = None, deterministic: bool = True,
                          implementation: str | None = None,
                          query_rope: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
  """softmax(rope(q) rope(k)^T / sqrt(d) + mask) v via jax.nn; q, k, v: [B, L, H, D] -> [B, L, H, D].

  `query_rope`: q's own tables when q holds a subset of the positions (default: `rope`)."""
  del dropout_rng
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"ModelConfig.attention_options implementation={implementation!r}: "
                     f"expected one of {IMPLEMENTATIONS}")
  if not deterministic and dropout_rate > 0.0:
    # jax.nn.dot_product_attention has no dropout; silently skipping it would change training.
    raise ValueError(f"attention='dot_product' has no attention dropout; set ModelConfig.attention_dropout=0 "
                     f"(got {dropout_rate}) or use attention='blockwise'/'softmax'")
  if implementation == "cudnn":
    return cudnn_attention(q, k, v, mask, rope=rope, query_rope=query_rope)
  if rope is not None:
    q, k = rope_lib.apply_rope(q, *(query_rope or rope)), rope_lib.apply_rope(k, *rope)
  # jax.nn fills masked scores with a finite large negative, so fully masked rows match `softmax`.
  return jax.nn.dot_product_attention(q, k, v, mask=mask.dense(), implementation=implementation)
