"""Exact softmax attention: the einsum reference, and `softmax`, the same maths with a hand-written backward.

`reference_attention` is the textbook formula differentiated by JAX; every variant, `softmax` included,
is tested against it. `softmax` (the default) computes the same function but owns its VJP:
  * RoPE and the 1/sqrt(d) scale are applied once, on the way into the [B, H, L, D] layout the
    batched matmuls want, in a half-split basis (even pair members first) that needs only contiguous
    slices. Scores are invariant to permuting d in q and k alike, so nothing else changes;
  * the backward uses rowsum(dO * O) instead of rowsum(dP * P) (FlashAttention's identity) and maps
    dq, dk back through the inverse rotation directly instead of differentiating strided slices;
  * called without differentiation (inference, evaluation) it runs the reference's forward itself.
On a 2-core CPU this makes the RoFormerV2-small train step ~6% faster (docs/BENCHMARKS.md).

On an AVX-512 CPU, float32 attention without dropout instead runs the fused kernel of
`roformer_jax.kernels.cpu_attention` (forward and backward, same maths, [B, L, H, D] in and out), which
makes that step a further 4% (seq 128) to 8% (seq 512) faster. On an NVIDIA GPU, bf16 attention without
dropout runs cuDNN's flash attention (`dot_product.cudnn_attention`: packed documents, query subsets and
rows that see no key as here). Both are staged per platform; `implementation="xla"` opts out of both.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec as P

from roformer_jax import rope as rope_lib
from roformer_jax.attention import AttentionMask, dot_product, register
from roformer_jax.kernels import cpu_attention
from roformer_jax.matmul import swap_minor, transpose_copy
from roformer_jax.train import sharding

_MIN = float(jnp.finfo(jnp.float32).min)


def reference_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask, *,
                        rope: tuple[jax.Array, jax.Array] | None = None, dropout_rate: float = 0.0,
                        dropout_rng: jax.Array | None = None, deterministic: bool = True,
                        query_rope: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
  """softmax(rope(q) rope(k)^T / sqrt(d) + mask) v; q, k, v: [B, L, H, D] -> [B, L, H, D].

  q may hold a subset of the positions ([B, P, H, D]): `query_rope` (default `rope`) and
  `mask.query_segment_ids` are then those positions' own."""
  keep = _keep_mask(q, k, dropout_rate, dropout_rng, deterministic)
  return _dense(q, k, v, mask.dense(), _ropes(rope, query_rope), keep, float(dropout_rate))


def _ropes(rope, query_rope):
  """(q's tables, k's tables); (None, None) without RoPE."""
  return (None, None) if rope is None else (query_rope or rope, rope)


def _keep_mask(q, k, rate, rng, deterministic) -> jax.Array | None:
  """The dropout keep mask [B, H, Lq, Lk] (None when inactive); both entry points draw it here, so the
  same key gives `softmax` and the reference the same mask."""
  if deterministic or rate <= 0.0:
    return None
  return jax.random.bernoulli(rng, 1.0 - rate, (q.shape[0], q.shape[2], q.shape[1], k.shape[1]))


def _dense(q, k, v, visible, ropes, keep, rate):
  q_rope, k_rope = ropes
  if k_rope is not None:
    q, k = rope_lib.apply_rope(q, *q_rope), rope_lib.apply_rope(k, *k_rope)
  scale = q.shape[-1] ** -0.5
  # Scores accumulate and softmax in float32 whatever the compute dtype.
  scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
  # A finite minimum (not -inf) keeps fully masked rows finite, as the ports' additive masks do.
  scores = jnp.where(visible, scores, _MIN)
  probs = jax.nn.softmax(scores, axis=-1)
  if keep is not None:
    probs = jnp.where(keep, probs / (1.0 - rate), 0.0)
  return jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v, preferred_element_type=jnp.float32).astype(v.dtype)


def _rotate(x: jax.Array, rope: tuple[jax.Array, jax.Array] | None) -> jax.Array:
  """[B, L, H, D] -> rope(x) in the half-split basis (float32 rotation, x's dtype out)."""
  if rope is not None:
    sin, cos = (t[:, :, None, :] for t in rope)
    x1, x2 = x[..., 0::2].astype(jnp.float32), x[..., 1::2].astype(jnp.float32)
    x = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)
  return x


def _to_heads(x: jax.Array, rope: tuple[jax.Array, jax.Array] | None) -> jax.Array:
  """[B, L, H, D] -> rope(x) as [B, H, L, D] in the half-split basis."""
  return transpose_copy(_rotate(x, rope), (0, 2, 1, 3))  # (a plain transpose would fold into the matmuls: float32 there)


def _from_heads(g: jax.Array, rope: tuple[jax.Array, jax.Array] | None, dtype, perm=(0, 2, 1, 3)) -> jax.Array:
  """The transpose of `_to_heads` (a linear map): a [B, H, L, D] cotangent (or any layout, with the
  `perm` that takes it to [B, L, H, D]) -> [B, L, H, D]."""
  g = g.transpose(perm).astype(jnp.float32)
  if rope is not None:
    sin, cos = (t[:, :, None, :] for t in rope)
    half = g.shape[-1] // 2
    g1, g2 = g[..., :half], g[..., half:]
    g = jnp.stack([g1 * cos + g2 * sin, g2 * cos - g1 * sin], axis=-1).reshape(g.shape)
  return g.astype(dtype)


def _zeros(ropes):
  """The rope tables' cotangent: they are constants of the model (positions), not trained."""
  return jax.tree_util.tree_map(jnp.zeros_like, ropes)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _attend(q, k, v, visible, ropes, keep, rate):
  # Not differentiated (inference, evaluation): the reference's own forward, which XLA:CPU runs up to
  # ~20% faster than `_attend_fwd`'s (whose layout serves the backward).
  return _dense(q, k, v, visible, ropes, keep, rate)


def _attend_fwd(q, k, v, visible, ropes, keep, rate):
  scale = q.shape[-1] ** -0.5
  q_rope, k_rope = ropes
  qh = _to_heads(q, q_rope) * jnp.asarray(scale, q.dtype)  # exact for d = 64 (a power of 2)
  kh, vh = _to_heads(k, k_rope), transpose_copy(v, (0, 2, 1, 3))
  # + bias (0 or the float32 minimum) rather than `where`: XLA:CPU re-evaluates a `where` in every
  # consumer of the softmax fusion. s + MIN rounds to MIN for any |s| < 1e31, as the reference's fill.
  s = jnp.einsum("bhld,bhmd->bhlm", qh, kh, preferred_element_type=jnp.float32)
  s = s + jnp.where(visible, 0.0, _MIN)
  e = jnp.exp(s - jnp.max(s, axis=-1, keepdims=True))
  p = e * (1.0 / jnp.sum(e, axis=-1, keepdims=True))
  pd = p if keep is None else jnp.where(keep, p * (1.0 / (1.0 - rate)), 0.0)
  o = jnp.einsum("bhlm,bhmd->bhld", pd.astype(v.dtype), vh, preferred_element_type=jnp.float32)
  out = o.astype(v.dtype).transpose(0, 2, 1, 3)
  return out, (qh, kh, vh, p, o, visible, ropes, keep)


def _attend_bwd(rate, res, dout):
  qh, kh, vh, p, o, visible, ropes, keep = res
  q_rope, k_rope = ropes
  scale = qh.shape[-1] ** -0.5
  do = transpose_copy(dout, (0, 2, 1, 3))
  pd = p if keep is None else jnp.where(keep, p * (1.0 / (1.0 - rate)), 0.0)
  # dV and dK contract over the query axis. They are written as dV^T = dO^T P and dK^T = Q^T dS, [B, H, D, L]
  # (~1.4x faster on XLA:CPU than [B, H, L, D]; both need a transpose to [B, L, H, D] anyway), with dO^T and
  # Q^T materialised (`swap_minor`) so every matmul contracts its left operand's minor axis: the form
  # XLA:CPU's bf16 matmuls take (otherwise it converts the operands and multiplies in float32).
  dv = jnp.einsum("bhdl,bhlm->bhdm", swap_minor(do), pd.astype(do.dtype), preferred_element_type=jnp.float32)
  # Masked scores get no gradient, as `where` gives the reference. Where a row sees any key, P is exactly 0
  # at its masked scores (exp of the float32 minimum), so dS = P * (..) is too. Only a row that sees no key
  # (uniform P, as the reference's finite fill gives) needs zeroing, and dS is linear in that row of dO:
  # zero it there, in dO ([B, H, L, D]), rather than mask the [B, H, L, L] dS in a pass of its own.
  # (At seq 512, v2_small's train step: 2.7% faster, paired in-process A/B; docs/BENCHMARKS.md.)
  do_s = jnp.where(jnp.any(visible, axis=-1, keepdims=True), do, jnp.zeros((), do.dtype))
  dp = jnp.einsum("bhld,bhmd->bhlm", do_s, vh, preferred_element_type=jnp.float32)
  if keep is not None:
    dp = jnp.where(keep, dp * (1.0 / (1.0 - rate)), 0.0)
  # rowsum(dP * P) == rowsum(dO * O), with or without dropout; O is [.., D], P is [.., L].
  ds = p * (dp - jnp.sum(do_s.astype(jnp.float32) * o, axis=-1, keepdims=True))
  dqh = jnp.einsum("bhlm,bhmd->bhld", ds.astype(kh.dtype), kh, preferred_element_type=jnp.float32) * scale
  dkh = jnp.einsum("bhdl,bhlm->bhdm", swap_minor(qh), ds.astype(qh.dtype), preferred_element_type=jnp.float32)
  dq, dk = _from_heads(dqh, q_rope, qh.dtype), _from_heads(dkh, k_rope, kh.dtype, perm=(0, 3, 1, 2))
  return dq, dk, dv.astype(vh.dtype).transpose(0, 3, 1, 2), None, _zeros(ropes), None


_attend.defvjp(_attend_fwd, _attend_bwd)


# The fused CPU kernel (roformer_jax/kernels/cpu_attention.cc): the same maths in the [B, L, H, D] layout,
# each (batch, head) in cache, so neither the transposes nor XLA's passes over the [B, H, L, L] scores.
# The ids are segment ids, or with `causal` causal ids (the kernel compares them with <= instead of ==).
@functools.partial(jax.custom_vjp, nondiff_argnums=(7,))
def _attend_kernel(q, k, v, key_mask, key_seg, query_seg, ropes, causal=False):
  return _attend_kernel_fwd(q, k, v, key_mask, key_seg, query_seg, ropes, causal)[0]


def _attend_kernel_fwd(q, k, v, key_mask, key_seg, query_seg, ropes, causal=False):
  q_rope, k_rope = ropes
  qh = _rotate(q, q_rope) * jnp.asarray(q.shape[-1] ** -0.5, q.dtype)
  kh = _rotate(k, k_rope)
  o, p = cpu_attention.forward(qh, kh, v, key_mask, key_seg, query_seg, causal)
  return o, (qh, kh, v, o, p, key_mask, key_seg, query_seg, ropes)


def _attend_kernel_bwd(causal, res, dout):
  qh, kh, v, o, p, key_mask, key_seg, query_seg, ropes = res
  q_rope, k_rope = ropes
  dqh, dkh, dv = cpu_attention.backward(qh, kh, v, o, dout, p, key_mask, key_seg, query_seg, causal)
  dq = _from_heads(dqh * (qh.shape[-1] ** -0.5), q_rope, qh.dtype, perm=(0, 1, 2, 3))
  dk = _from_heads(dkh, k_rope, kh.dtype, perm=(0, 1, 2, 3))
  return dq, dk, dv, None, None, None, _zeros(ropes)


_attend_kernel.defvjp(_attend_kernel_fwd, _attend_kernel_bwd)


def _kernel_applies(q, k, v, mask: AttentionMask, keep, implementation: str) -> bool:
  if implementation not in ("auto", "xla"):
    raise ValueError(f"attention_options: softmax implementation must be 'auto' or 'xla', got {implementation!r}")
  # The fused kernel takes key padding and one kind of ids: segments or causal ids (UniLM), not both.
  one_kind = mask.segment_ids is None or mask.causal_ids is None
  return (implementation == "auto" and keep is None and mask.key_mask.ndim == 2 and one_kind
          and all(x.dtype == jnp.float32 for x in (q, k, v)) and cpu_attention.available())


@register("softmax", query_subset=True, causal_ids=True)
def softmax_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask, *,
                      rope: tuple[jax.Array, jax.Array] | None = None, dropout_rate: float = 0.0,
                      dropout_rng: jax.Array | None = None, deterministic: bool = True,
                      query_rope: tuple[jax.Array, jax.Array] | None = None,
                      implementation: str = "auto") -> jax.Array:
  """`reference_attention` with a hand-written backward; q, k, v: [B, L, H, D] -> [B, L, H, D]
  (q may be a subset of the positions, as there).

  implementation="auto" runs float32 attention without dropout through the fused CPU kernel when the
  program runs on a CPU with AVX-512 (`roformer_jax.kernels.cpu_attention`), and bf16 attention without
  dropout through cuDNN on NVIDIA GPUs (where JAX has cuDNN); "xla" never does. Other platforms (TPU)
  always get the XLA path."""
  keep = _keep_mask(q, k, dropout_rate, dropout_rng, deterministic)
  ropes = _ropes(rope, query_rope)
  xla = lambda q, k, v: _attend(q, k, v, mask.dense(), ropes, keep, float(dropout_rate))
  branches = {}
  if _kernel_applies(q, k, v, mask, keep, implementation):
    causal = mask.causal_ids is not None
    key_seg, query_seg = ((mask.causal_ids, mask.query_causal_ids) if causal
                          else (mask.segment_ids, mask.query_segment_ids))
    query_seg = key_seg if query_seg is None else query_seg
    if key_seg is None:
      key_seg, query_seg = (jnp.zeros(x.shape[:2], jnp.int32) for x in (k, q))
    # The kernel reads them as [B, Lk] and [B, Lq]: a mask shared by the batch ([1, L]) is broadcast here, as
    # `mask.dense()` broadcasts it for the other paths.
    key_mask, key_seg, query_seg = (jnp.broadcast_to(t, x.shape[:2]) for t, x in
                                    ((mask.key_mask, k), (key_seg, k), (query_seg, q)))
    kernel = functools.partial(_attend_kernel, causal=causal)
    branches["cpu"] = lambda q, k, v: _per_shard(kernel, q, k, v, key_mask.astype(bool),
                                                 key_seg.astype(jnp.int32), query_seg.astype(jnp.int32), ropes)
  if implementation == "auto" and dot_product.cudnn_applies(q, dropout=keep is not None):
    # NVIDIA GPUs, bf16: cuDNN's flash attention, the same function (packed documents and query subsets
    # included), without XLA's passes over [B, H, L, L] float32 scores.
    branches["cuda"] = lambda q, k, v: dot_product.cudnn_attention(q, k, v, mask, rope=rope, query_rope=query_rope)
  if not branches:
    return xla(q, k, v)
  return lax.platform_dependent(q, k, v, default=xla, **branches)


def _per_shard(fn, q, k, v, key_mask, key_seg, query_seg, ropes):
  """fn on each device's shard of the batch and heads. XLA's partitioner knows nothing of a custom call and
  would gather every operand whole onto every device; the kernel is per (batch, head) anyway."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    return fn(q, k, v, key_mask, key_seg, query_seg, ropes)
  spec = sharding.fit_spec(nn.logical_to_mesh_axes(("batch", "length", "heads", "kv")), q.shape, mesh.shape)
  b, h = spec[0], spec[2]
  x, m = P(b, None, h, None), P(b, None)  # every key and the whole head dim on each shard
  rope_specs = jax.tree_util.tree_map(lambda t: P(b if t.shape[0] == q.shape[0] else None), ropes)
  return jax.shard_map(fn, in_specs=(x, x, x, m, m, m, rope_specs), out_specs=x, check_vma=False)(
      q, k, v, key_mask, key_seg, query_seg, ropes)
