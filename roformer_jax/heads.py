"""Task heads on the encoder that several fine-tuning tasks share: the [CLS] classifier and the span heads.

`SequenceClassifier`: see its docstring. GlobalPointer and Efficient GlobalPointer span-scoring heads (kexue 8373, 8877; bert4keras `layers`).

Both map hidden states h [B, L, D] to scores s [B, H, L, L], s[b, a, i, j] = the score of the span
from token i to token j (inclusive) being of type a; a span is predicted iff s > 0.

GlobalPointer: one dense D -> H * 2d; per head q = the first d, k = the last d of its 2d chunk;
optional RoPE (interleaved pairs, `roformer_jax.rope`, positions 0..L-1) on q and k;
s = <q_i, k_j> / sqrt(d).
EfficientGlobalPointer: p = dense D -> 2d; q = p[..., 0::2], k = p[..., 1::2]; optional RoPE;
e(i, j) = <q_i, k_j> / sqrt(d) shared by all types, plus a per-type bias from the pre-RoPE p:
b = dense 2d -> 2H (p) / 2, s_a(i, j) = e(i, j) + b[2a](j) + b[2a + 1](i).

A cell is masked unless tokens i and j are both real (`mask`) and, with `tril_mask`, j >= i. Masked
cells hold `losses.MASKED` (-1e12, finite; bert4keras uses -inf) so the losses and any reduction stay
finite. Scores are float32 whatever the compute `dtype` (the projections run in `dtype` with float32
accumulation; RoPE rotates in float32).

Parameters are float32 with logical axis names, laid out so bert4keras weights map by a reshape:
GlobalPointer `dense` kernel [D, H, 2, d] (= Keras [D, H*2d]), bias [H, 2, d]; EfficientGlobalPointer
`p_dense` kernel [D, 2d], bias [2d], `q_dense` kernel [2d, H, 2] (= Keras [2d, 2H]), bias [H, 2].
`use_bias` defaults to True as in bert4keras; the RoFormerV2/CLUE scripts pass False and the encoder's
initializer (`kernel_init`; bert4keras' default is lecun_normal).

`GPLinkerRelation` and `GPLinkerEvent` are the three heads of GPLinker (finetune-spec §c.1, c.4) with the
reference's switches per head.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from roformer_jax import rope as rope_lib
from roformer_jax.config import ModelConfig
from roformer_jax.losses import MASKED
from roformer_jax.matmul import matmul
from roformer_jax.model import Dense, RoFormerModel

POOLINGS = ("first", "mean", "max")


class SequenceClassifier(nn.Module):
  """Encoder -> pooled vector -> dense -> float32 logits [B, num_labels].

  As the CLUE baselines (finetune-spec §d.1): the last layer's output, pooled as the first token ([CLS],
  default), the mean or the max over real tokens, then one dense layer with the encoder's initialiser
  (RoFormerV2: truncated normal scaled by fan-in and depth; v1: N(0, 0.02)). `use_bias` None follows the
  encoder (v1 yes, v2 no); the CLUE scripts (CLUE-bert4keras and the roformer-v2 copy alike) build the head as
  keras `Dense(units, kernel_initializer=base.initializer)`, whose default use_bias=True gives a zero-initialised
  bias for RoFormerV2 too, so the CLUE recipe passes True (finetune-spec §0.4 says no bias: that holds for
  their GlobalPointer heads only, which pass use_bias=False explicitly). With
  `first` pooling the last layer runs at [CLS] only (`output_positions`): the same values for ~1/L of
  that layer's cost. Params: {"roformer": encoder, "classifier": {"kernel" [hidden, num_labels], ...}}.
  Multiple choice (CLUE's C3, CHID): inputs [B, C, L] and num_labels=1 score each choice's sequence on its own,
  logits [B, C] (the softmax runs across choices).
  """
  cfg: ModelConfig
  num_labels: int
  pooling: str = "first"
  use_bias: bool | None = None

  def setup(self):
    if self.pooling not in POOLINGS:
      raise ValueError(f"SequenceClassifier.pooling: unknown pooling {self.pooling!r}; expected one of {POOLINGS}")
    self.roformer = RoFormerModel(self.cfg)
    self.classifier = Dense(self.cfg, (self.num_labels,), ("embed", None), use_bias=self.use_bias)

  def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array | None = None,
               attention_mask: jax.Array | None = None, *, position_ids: jax.Array | None = None,
               deterministic: bool = True) -> jax.Array:
    if input_ids.ndim == 3:  # [B, C, L] choices: one row per choice, then [B, C] scores
      if self.num_labels != 1:
        raise ValueError(f"SequenceClassifier: [batch, choices, length] inputs need num_labels=1, got {self.num_labels}")
      flat = lambda x: None if x is None else x.reshape((-1,) + x.shape[2:])
      logits = self(flat(input_ids), flat(token_type_ids), flat(attention_mask), position_ids=flat(position_ids),
                    deterministic=deterministic)
      return logits.reshape(input_ids.shape[:2])
    encode = lambda **kw: self.roformer(input_ids, token_type_ids, attention_mask, position_ids=position_ids,
                                        deterministic=deterministic, **kw)
    if self.pooling == "first":
      pooled = encode(output_positions=jnp.zeros((input_ids.shape[0], 1), jnp.int32))[:, 0]  # [B, hidden]
    else:
      h = encode().astype(jnp.float32)  # [B, L, hidden]
      mask = input_ids != self.cfg.pad_token_id if attention_mask is None else attention_mask.astype(bool)
      mask = mask[..., None]  # [B, L, 1]
      if self.pooling == "mean":
        pooled = jnp.sum(jnp.where(mask, h, 0.0), axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1)
      else:  # a row with no real token (an eval batch's weight-0 filler) pools to 0, not -inf (NaN logits)
        pooled = jnp.where(jnp.any(mask, axis=1), jnp.max(jnp.where(mask, h, -jnp.inf), axis=1), 0.0)
      pooled = pooled.astype(jnp.dtype(self.cfg.dtype))
    return self.classifier(pooled).astype(jnp.float32)

Array = jax.Array


def _param(init, axes):
  return nn.with_logical_partitioning(init, axes)


def span_mask(mask: Optional[Array], batch: int, length: int, tril_mask: bool) -> Array:
  """[B, 1, L, L] bool: cell (i, j) is valid iff tokens i and j are real and (with tril_mask) j >= i."""
  valid = jnp.ones((batch, 1, length, length), bool)
  if mask is not None:
    m = jnp.asarray(mask).astype(bool)
    if m.shape != (batch, length):
      raise ValueError(f"GlobalPointer: mask {m.shape} must be [batch, length] = {(batch, length)}")
    valid = valid & m[:, None, :, None] & m[:, None, None, :]
  if tril_mask:
    valid = valid & jnp.triu(jnp.ones((length, length), bool))
  return valid


def _rope(x: Array, positions: Array, head_size: int, base: float) -> Array:
  """Interleaved RoPE on x [B, L, heads, d] at positions [B, L]."""
  sin, cos = rope_lib.rope_angles(positions, head_size, base)
  return rope_lib.apply_rope(x, sin, cos)


class _Dense(nn.Module):
  """x [..., F] -> [..., *features] through a kernel [F, *features] (and a bias [*features]); the
  matmul runs in `dtype` with float32 accumulation (`roformer_jax.matmul`)."""
  features: tuple[int, ...]
  kernel_axes: tuple[Optional[str], ...]
  use_bias: bool
  kernel_init: Any
  dtype: Any

  @nn.compact
  def __call__(self, x: Array) -> Array:
    fan_in = x.shape[-1]

    def init(key, shape, dtype):
      # Initialised as the 2-D [F, prod(features)] kernel Keras has, then reshaped: a variance-scaling
      # initializer given the N-D shape would count fan-in over the wrong axes.
      return self.kernel_init(key, (shape[0], math.prod(shape[1:])), dtype).reshape(shape)

    kernel = self.param("kernel", _param(init, self.kernel_axes), (fan_in,) + self.features, jnp.float32)
    dtype = jnp.dtype(self.dtype)
    y = matmul(x.astype(dtype), kernel.reshape(fan_in, -1)).reshape(x.shape[:-1] + self.features)
    if self.use_bias:
      bias = self.param("bias", _param(nn.initializers.zeros, self.kernel_axes[1:]), self.features, jnp.float32)
      y = y + bias.astype(dtype)
    return y


class GlobalPointer(nn.Module):
  """Span scores [B, H, L, L] (float32) from hidden states x [B, L, D]; see the module docstring.

  Args (to __call__): x; mask [B, L] (1/True = real token; None = all real).
  """
  heads: int
  head_size: int = 64
  rope: bool = True
  tril_mask: bool = True
  use_bias: bool = True
  dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()
  rope_base: float = 10000.0

  @nn.compact
  def __call__(self, x: Array, mask: Optional[Array] = None) -> Array:
    batch, length = x.shape[:2]
    d = self.head_size
    qk = _Dense((self.heads, 2, d), ("embed", "heads", None, "kv"), self.use_bias, self.kernel_init, self.dtype,
                name="dense")(x)  # [B, L, H, 2, d]
    q, k = qk[..., 0, :], qk[..., 1, :]
    if self.rope:
      positions = rope_lib.default_positions(batch, length)
      q, k = _rope(q, positions, d, self.rope_base), _rope(k, positions, d, self.rope_base)
    scores = jnp.einsum("bmhd,bnhd->bhmn", q, k, preferred_element_type=jnp.float32) / math.sqrt(d)
    return jnp.where(span_mask(mask, batch, length, self.tril_mask), scores, MASKED)


class EfficientGlobalPointer(nn.Module):
  """Efficient GlobalPointer: span scores [B, H, L, L] (float32); same interface as `GlobalPointer`."""
  heads: int
  head_size: int = 64
  rope: bool = True
  tril_mask: bool = True
  use_bias: bool = True
  dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()
  rope_base: float = 10000.0

  @nn.compact
  def __call__(self, x: Array, mask: Optional[Array] = None) -> Array:
    batch, length = x.shape[:2]
    d = self.head_size
    p = _Dense((2 * d,), ("embed", "kv"), self.use_bias, self.kernel_init, self.dtype, name="p_dense")(x)  # [B, L, 2d]
    q, k = p[..., 0::2], p[..., 1::2]
    if self.rope:
      positions = rope_lib.default_positions(batch, length)
      q = _rope(q[:, :, None], positions, d, self.rope_base)[:, :, 0]
      k = _rope(k[:, :, None], positions, d, self.rope_base)[:, :, 0]
    shared = jnp.einsum("bmd,bnd->bmn", q, k, preferred_element_type=jnp.float32) / math.sqrt(d)
    # Per-type bias from the pre-RoPE p: [..., a, 0] scores the end token j, [..., a, 1] the start i.
    bias = _Dense((self.heads, 2), ("kv", "heads", None), self.use_bias, self.kernel_init, self.dtype,
                  name="q_dense")(p).astype(jnp.float32) / 2  # [B, L, H, 2]
    end_bias = jnp.transpose(bias[..., 0], (0, 2, 1))[:, :, None, :]  # [B, H, 1, L]
    start_bias = jnp.transpose(bias[..., 1], (0, 2, 1))[:, :, :, None]  # [B, H, L, 1]
    scores = shared[:, None] + end_bias + start_bias
    return jnp.where(span_mask(mask, batch, length, self.tril_mask), scores, MASKED)


def _pointer(efficient: bool):
  return EfficientGlobalPointer if efficient else GlobalPointer


class GPLinkerRelation(nn.Module):
  """GPLinker's three relation heads (bojone/GPLinker duie_v1.py): entity (2 heads: subject, object; RoPE,
  tril mask), head and tail (one head per predicate; no RoPE, no tril mask: (s_h, o_h) may have o_h < s_h).
  Efficient GlobalPointers by default, as the final scripts. Returns (entity, head, tail) scores."""
  predicates: int
  head_size: int = 64
  efficient: bool = True
  use_bias: bool = True
  dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: Array, mask: Optional[Array] = None) -> tuple[Array, Array, Array]:
    kw = dict(head_size=self.head_size, use_bias=self.use_bias, dtype=self.dtype, kernel_init=self.kernel_init)
    cls = _pointer(self.efficient)
    return (cls(2, name="entity", **kw)(x, mask),
            cls(self.predicates, rope=False, tril_mask=False, name="head", **kw)(x, mask),
            cls(self.predicates, rope=False, tril_mask=False, name="tail", **kw)(x, mask))


class GPLinkerEvent(nn.Module):
  """GPLinker's three event heads (bojone/GPLinker duee_v1.py): argument (one head per (event type, role)
  label, triggers included; RoPE, tril mask), head link and tail link (1 head each; no RoPE, tril mask).
  Returns (argument, head, tail) scores."""
  labels: int
  head_size: int = 64
  efficient: bool = True
  use_bias: bool = True
  dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: Array, mask: Optional[Array] = None) -> tuple[Array, Array, Array]:
    kw = dict(head_size=self.head_size, use_bias=self.use_bias, dtype=self.dtype, kernel_init=self.kernel_init)
    cls = _pointer(self.efficient)
    return (cls(self.labels, name="argument", **kw)(x, mask),
            cls(1, rope=False, name="head", **kw)(x, mask),
            cls(1, rope=False, name="tail", **kw)(x, mask))


def encoder_kernel_init(cfg: ModelConfig):
  """The encoder's initializer for a head's kernel, as the RoFormerV2 scripts give their heads (truncated
  normal, std 1.1368 / sqrt(fan_in * layers); flax divides by the same 0.8796 truncation factor); v1: N(0, 0.02)."""
  if cfg.version == "v2":
    return nn.initializers.variance_scaling(1.0 / cfg.num_layers, "fan_in", "truncated_normal")
  return nn.initializers.normal(0.02)


class EncoderPointer(nn.Module):
  """The encoder plus a GlobalPointer (or Efficient GlobalPointer) head: input ids [B, L] -> float32 span scores
  [B, heads, L, L] (masked cells `losses.MASKED`). Params: {"roformer": encoder, "pointer": head}."""
  cfg: ModelConfig
  heads: int
  head_size: int = 64
  efficient: bool = False
  rope: bool = True
  tril_mask: bool = True
  use_bias: bool = True

  @nn.compact
  def __call__(self, input_ids: Array, token_type_ids: Optional[Array] = None,
               attention_mask: Optional[Array] = None, deterministic: bool = True,
               span_mask: Optional[Array] = None) -> Array:
    """`span_mask` [B, L]: the tokens a span may start or end at (default: the attention mask). CMRC2018
    attends over the question but keeps its spans out of it, as the reference's `CustomMasking`."""
    h = RoFormerModel(self.cfg, name="roformer")(input_ids, token_type_ids, attention_mask,
                                                 deterministic=deterministic)
    mask = (input_ids != self.cfg.pad_token_id) if attention_mask is None else attention_mask
    if span_mask is not None:
      mask = span_mask
    return _pointer(self.efficient)(self.heads, self.head_size, rope=self.rope, tril_mask=self.tril_mask,
                                    use_bias=self.use_bias, dtype=jnp.dtype(self.cfg.dtype),
                                    kernel_init=encoder_kernel_init(self.cfg), name="pointer")(h, mask)


class EncoderGPLinker(nn.Module):
  """The encoder plus GPLinker's three heads: input ids [B, L] -> three float32 score arrays [B, heads, L, L].

  `kind` "relation": `GPLinkerRelation(labels)` (entity, head, tail; labels = predicates); "event":
  `GPLinkerEvent(labels)` (argument, head link, tail link; labels = (event type, role) pairs). Params:
  {"roformer": encoder, "gplinker": the three heads}."""
  cfg: ModelConfig
  kind: str
  labels: int
  head_size: int = 64
  efficient: bool = True
  use_bias: bool = True

  @nn.compact
  def __call__(self, input_ids: Array, token_type_ids: Optional[Array] = None,
               attention_mask: Optional[Array] = None, deterministic: bool = True) -> tuple[Array, Array, Array]:
    if self.kind not in ("relation", "event"):
      raise ValueError(f"EncoderGPLinker.kind: {self.kind!r}; expected 'relation' or 'event'")
    h = RoFormerModel(self.cfg, name="roformer")(input_ids, token_type_ids, attention_mask,
                                                 deterministic=deterministic)
    mask = (input_ids != self.cfg.pad_token_id) if attention_mask is None else attention_mask
    cls = GPLinkerRelation if self.kind == "relation" else GPLinkerEvent
    return cls(self.labels, self.head_size, efficient=self.efficient, use_bias=self.use_bias,
               dtype=jnp.dtype(self.cfg.dtype), kernel_init=encoder_kernel_init(self.cfg), name="gplinker")(h, mask)
