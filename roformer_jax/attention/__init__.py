"""The attention boundary: every variant is a function (q, k, v, mask, rope) -> output.

q, k, v are [batch, length, heads, head_dim] *before* RoPE, so a fused kernel can rotate
inside itself; the plain variants call `roformer_jax.rope.apply_rope` first. The mask is
kept compact (key padding + optional packed-segment ids + optional causal ids) so O(n)-memory
variants never build an n x n mask. Variants register by name and are chosen by `ModelConfig.attention`.

Variants registered with `query_subset=True` also take queries at a subset of the positions
(q: [B, P, H, D] with `query_rope` tables and `mask.query_segment_ids` of those positions; k, v
at all L). The encoder's last layer uses it when only some outputs are needed (the MLM head).
"""

from __future__ import annotations

from typing import Callable, Protocol

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class AttentionMask:
  """key_mask [B, Lk] bool (True = attend); segment_ids [B, L] int or None (packed documents);
  query_segment_ids [B, Lq], the queries' own ids when they are a subset of the positions.

  causal_ids [B, Lk] int or None: query q sees key k only where causal_ids[k] <= causal_ids[q]
  (query_causal_ids [B, Lq] are the queries' own, as for segments). All zeros is bidirectional, 0..L-1
  is a causal LM, and cumsum(token_type_ids) is UniLM's seq2seq mask (bert4keras `application='unilm'`:
  the source, type 0, sees the source; target token t sees the source and targets <= t). O(L) per row,
  so the blockwise kernels build it inside their tiles as they do segments."""

  key_mask: jax.Array
  segment_ids: jax.Array | None = None
  query_segment_ids: jax.Array | None = None
  causal_ids: jax.Array | None = None
  query_causal_ids: jax.Array | None = None

  def dense(self) -> jax.Array:
    """[B, 1, Lq, Lk] bool; only for variants that materialise scores anyway."""
    mask = self.key_mask[:, None, None, :]
    if self.segment_ids is not None:
      q_ids = self.segment_ids if self.query_segment_ids is None else self.query_segment_ids
      same = q_ids[:, :, None] == self.segment_ids[:, None, :]
      mask = mask & same[:, None]
    if self.causal_ids is not None:
      q_ids = self.causal_ids if self.query_causal_ids is None else self.query_causal_ids
      mask = mask & (self.causal_ids[:, None, :] <= q_ids[:, :, None])[:, None]
    return mask


class AttentionFn(Protocol):

  def __call__(self, q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask, *,
               rope: tuple[jax.Array, jax.Array] | None, dropout_rate: float,
               dropout_rng: jax.Array | None, deterministic: bool, **options) -> jax.Array:
    ...


_REGISTRY: dict[str, Callable[..., jax.Array]] = {}
_QUERY_SUBSET: set[str] = set()
_CAUSAL_IDS: set[str] = set()


def register(name: str, *, query_subset: bool = False, causal_ids: bool = False):
  """Registers an attention function; `query_subset`: it accepts queries at a subset of the positions;
  `causal_ids`: it honours `AttentionMask.causal_ids` (the others would silently ignore it)."""
  def wrap(fn):
    _REGISTRY[name] = fn
    if query_subset:
      _QUERY_SUBSET.add(name)
    if causal_ids:
      _CAUSAL_IDS.add(name)
    return fn
  return wrap


def supports_query_subset(name: str) -> bool:
  return name in _QUERY_SUBSET


def supports_causal_ids(name: str) -> bool:
  return name in _CAUSAL_IDS


def get_attention(name: str) -> AttentionFn:
  if name not in _REGISTRY:
    raise ValueError(f"ModelConfig.attention: unknown attention variant {name!r}; known: {sorted(_REGISTRY)}")
  return _REGISTRY[name]


def available() -> list[str]:
  return sorted(_REGISTRY)


# Registration happens on import of each variant module (pure: no I/O).
from roformer_jax.attention import softmax as _softmax  # noqa: E402,F401
from roformer_jax.attention import blockwise as _blockwise  # noqa: E402,F401
from roformer_jax.attention import pallas as _pallas  # noqa: E402,F401
from roformer_jax.attention import dot_product as _dot_product  # noqa: E402,F401
from roformer_jax.attention import linear as _linear  # noqa: E402,F401
from roformer_jax.attention import splash as _splash  # noqa: E402,F401
