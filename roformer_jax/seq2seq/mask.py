"""UniLM's sequence-to-sequence mask as compact causal ids (see `roformer_jax.attention.AttentionMask`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def unilm_causal_ids(token_type_ids: jax.Array) -> jax.Array:
  """[B, L] segment ids (0 source, 1 target) -> [B, L] int32 causal ids, cumsum(token_type_ids).

  Key k is visible to query q iff ids[k] <= ids[q]: bert4keras `UniLM_Mask` exactly (its
  `idxs = cumsum(s); mask = idxs[None, :] <= idxs[:, None]`). Source tokens (id 0) see the source; the
  t-th target token (id t + 1) sees the source and targets <= t. Padding is the key mask's business.
  """
  return jnp.cumsum(token_type_ids.astype(jnp.int32), axis=-1, dtype=jnp.int32)


def unilm_dense_mask(token_type_ids: jax.Array, key_mask: jax.Array) -> jax.Array:
  """The explicit [B, 1, L, L] bool mask (reference and tests only: it is what the kernels never build)."""
  ids = unilm_causal_ids(token_type_ids)
  return (ids[:, None, :] <= ids[:, :, None])[:, None] & key_mask[:, None, None, :].astype(bool)
