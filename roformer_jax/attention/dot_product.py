"""`jax.nn.dot_product_attention`: XLA's fused path, or cuDNN flash attention on GPU.

implementation=None (the default) is XLA everywhere; "cudnn" asks for the cuDNN kernel and raises
where it cannot run (CPU, float32, head size > 128, ...). The cuDNN path takes key padding as
per-row key lengths, so it needs right-padded batches and no packed segments.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from roformer_jax import rope as rope_lib
from roformer_jax.attention import AttentionMask, register

IMPLEMENTATIONS = (None, "xla", "cudnn")


@register("dot_product", query_subset=True)
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
  if rope is not None:
    q, k = rope_lib.apply_rope(q, *(query_rope or rope)), rope_lib.apply_rope(k, *rope)
  if implementation == "cudnn":
    if mask.segment_ids is not None:
      raise ValueError("attention='dot_product' with implementation='cudnn' cannot take packed segment_ids; "
                       "use attention='pallas' or 'blockwise'")
    lengths = jnp.sum(mask.key_mask, axis=-1).astype(jnp.int32)  # right padding assumed
    return jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=lengths, implementation="cudnn")
  # jax.nn fills masked scores with a finite large negative, so fully masked rows match `softmax`.
  return jax.nn.dot_product_attention(q, k, v, mask=mask.dense(), implementation=implementation)
