"""Our Pallas flash-attention kernel with RoPE and the 1/sqrt(d) scale fused in (forward and backward).

q and k arrive un-rotated. Each kernel loads the even and odd halves of a q or k tile with stride-2
reads, rotates them in registers with the tile's sin/cos rows (the interleaved convention of
`roformer_jax.rope`), and scores with two half-width dots, s = q_e k_e^T + q_o k_o^T, so the rotated
tile is never re-interleaved or written out. The backward pass is two Pallas kernels (dk/dv over key
blocks, dq over query blocks) that rotate gradients back the same way. Masking and dropout share
`blockwise`'s helpers, so all three exact variants agree on fully masked rows and the dropout hash.

The same code lowers to Triton on GPU and Mosaic on TPU (arrays are laid out [B, H, L, D], per-row
statistics as [..., L, 1] so every block is 2-D); on CPU it runs with interpret=True.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from roformer_jax.attention import AttentionMask, blockwise, register

_NT = (((1,), (1,)), ((), ()))  # a @ b.T
_TN = (((0,), (0,)), ((), ()))  # a.T @ b
_NN = (((1,), (0,)), ((), ()))  # a @ b


def _dot(a, b, dims):
  # The precision is the model's (ModelConfig.matmul_precision, traced in as JAX's default), as for every
  # other variant: float32 models get full float32 dots, not TF32.
  return jax.lax.dot_general(a, b, dims, preferred_element_type=jnp.float32)


def _halves(ref, rows, d):
  """The even and odd columns of ref[rows] as float32 [r, d/2] each (stride-2 loads)."""
  half = d // 2
  even = ref[rows, pl.ds(0, half, stride=2)].astype(jnp.float32)
  odd = ref[rows, pl.ds(1, half, stride=2)].astype(jnp.float32)
  return even, odd


def _rotate(even, odd, sin, cos):
  return even * cos - odd * sin, odd * cos + even * sin


def _unrotate(d_even, d_odd, sin, cos):
  # The transpose of `_rotate`: carries gradients of the rotated halves back to the raw ones.
  return d_even * cos + d_odd * sin, d_odd * cos - d_even * sin


def _store_halves(ref, even, odd):
  half = even.shape[-1]
  ref[:, pl.ds(0, half, stride=2)] = even.astype(ref.dtype)
  ref[:, pl.ds(1, half, stride=2)] = odd.astype(ref.dtype)


def _iota(shape, axis, start):
  return start + jax.lax.broadcasted_iota(jnp.int32, shape, axis)


def _score_block(qe, qo, ke, ko, codes, seg_q, seg_k, cid_q, cid_k):
  s = _dot(qe, ke, _NT) + _dot(qo, ko, _NT)
  return blockwise.mask_scores(s, codes, seg_q, seg_k, cid_q, cid_k)


# ----------------------------------------------------------------------------------------------
# Kernels. Refs: q/k/v/o tiles [rows, D]; sin/cos [rows, D/2]; codes and key segments [1, Lk];
# query segments / causal ids and row statistics [rows, 1]; key causal ids [1, Lk]; seed [1].
# ----------------------------------------------------------------------------------------------
def _fwd_kernel(q_ref, k_ref, v_ref, sin_q, cos_q, sin_k, cos_k, codes_ref, segq_ref, segk_ref, cidq_ref, cidk_ref,
                seed_ref, o_ref, m_ref, logl_ref, *, bq, bk, nk, scale, rate, dtype):
  b, h, i = pl.program_id(0), pl.program_id(1), pl.program_id(2)
  d = q_ref.shape[-1]
  qe, qo = _halves(q_ref, slice(None), d)
  qe, qo = _rotate(qe, qo, sin_q[...], cos_q[...])
  qe, qo = (qe * scale).astype(dtype), (qo * scale).astype(dtype)
  seg_q = None if segq_ref is None else segq_ref[...]
  cid_q = None if cidq_ref is None else cidq_ref[...]

  def body(j, carry):
    o, m, l = carry
    rows = pl.ds(j * bk, bk)
    ke, ko = _halves(k_ref, rows, d)
    ke, ko = _rotate(ke, ko, sin_k[rows, :], cos_k[rows, :])
    seg_k = None if segk_ref is None else segk_ref[:, rows]
    cid_k = None if cidk_ref is None else cidk_ref[:, rows]
    s, _ = _score_block(qe, qo, ke.astype(dtype), ko.astype(dtype), codes_ref[:, rows], seg_q, seg_k, cid_q, cid_k)
    m_new = jnp.maximum(m, s.max(axis=1, keepdims=True))
    p = jnp.exp(s - m_new)
    corr = jnp.exp(m - m_new)
    l = corr * l + p.sum(axis=1, keepdims=True)
    if rate:
      keep = blockwise.dropout_keep(seed_ref[0], b, h, _iota((bq, bk), 0, i * bq), _iota((bq, bk), 1, j * bk), rate)
      p = jnp.where(keep, p * (1.0 / (1.0 - rate)), 0.0)
    v = v_ref[rows, :]
    return corr * o + _dot(p.astype(v.dtype), v, _NN), m_new, l

  init = (jnp.zeros((bq, d), jnp.float32), jnp.full((bq, 1), blockwise.PAD, jnp.float32),
          jnp.zeros((bq, 1), jnp.float32))
  o, m, l = jax.lax.fori_loop(0, nk, body, init)
  o_ref[...] = (o / l).astype(o_ref.dtype)
  m_ref[...] = m
  logl_ref[...] = jnp.log(l)


def _dkv_kernel(q_ref, k_ref, v_ref, do_ref, m_ref, logl_ref, delta_ref, sin_q, cos_q, sin_k, cos_k, codes_ref,
                segq_ref, segk_ref, cidq_ref, cidk_ref, seed_ref, dk_ref, dv_ref, *, bq, bk, nq, scale, rate, dtype):
  b, h, j = pl.program_id(0), pl.program_id(1), pl.program_id(2)
  d = k_ref.shape[-1]
  sin, cos = sin_k[...], cos_k[...]
  ke, ko = _rotate(*_halves(k_ref, slice(None), d), sin, cos)
  ke, ko = ke.astype(dtype), ko.astype(dtype)
  v = v_ref[...]
  codes = codes_ref[...]
  seg_k = None if segk_ref is None else segk_ref[...]
  cid_k = None if cidk_ref is None else cidk_ref[...]

  def body(i, carry):
    dke, dko, dv = carry
    rows = pl.ds(i * bq, bq)
    qe, qo = _rotate(*_halves(q_ref, rows, d), sin_q[rows, :], cos_q[rows, :])
    qe, qo = (qe * scale).astype(dtype), (qo * scale).astype(dtype)
    seg_q = None if segq_ref is None else segq_ref[rows, :]
    cid_q = None if cidq_ref is None else cidq_ref[rows, :]
    s, visible = _score_block(qe, qo, ke, ko, codes, seg_q, seg_k, cid_q, cid_k)
    p = jnp.exp((s - m_ref[rows, :]) - logl_ref[rows, :])
    do = do_ref[rows, :]
    dp = _dot(do, v, _NT)
    pd = p
    if rate:
      keep = blockwise.dropout_keep(seed_ref[0], b, h, _iota((bq, bk), 0, i * bq), _iota((bq, bk), 1, j * bk), rate)
      pd = jnp.where(keep, p * (1.0 / (1.0 - rate)), 0.0)
      dp = jnp.where(keep, dp * (1.0 / (1.0 - rate)), 0.0)
    dv = dv + _dot(pd.astype(do.dtype), do, _TN)
    ds = jnp.where(visible, p * (dp - delta_ref[rows, :]), 0.0).astype(dtype)
    return dke + _dot(ds, qe, _TN), dko + _dot(ds, qo, _TN), dv

  zeros = jnp.zeros((bk, d // 2), jnp.float32)
  dke, dko, dv = jax.lax.fori_loop(0, nq, body, (zeros, zeros, jnp.zeros((bk, d), jnp.float32)))
  _store_halves(dk_ref, *_unrotate(dke, dko, sin, cos))
  dv_ref[...] = dv.astype(dv_ref.dtype)


def _dq_kernel(q_ref, k_ref, v_ref, do_ref, m_ref, logl_ref, delta_ref, sin_q, cos_q, sin_k, cos_k, codes_ref,
               segq_ref, segk_ref, cidq_ref, cidk_ref, seed_ref, dq_ref, *, bq, bk, nk, scale, rate, dtype):
  b, h, i = pl.program_id(0), pl.program_id(1), pl.program_id(2)
  d = q_ref.shape[-1]
  sin, cos = sin_q[...], cos_q[...]
  qe, qo = _rotate(*_halves(q_ref, slice(None), d), sin, cos)
  qe, qo = (qe * scale).astype(dtype), (qo * scale).astype(dtype)
  seg_q = None if segq_ref is None else segq_ref[...]
  cid_q = None if cidq_ref is None else cidq_ref[...]
  do, m, logl, delta = do_ref[...], m_ref[...], logl_ref[...], delta_ref[...]

  def body(j, carry):
    dqe, dqo = carry
    rows = pl.ds(j * bk, bk)
    ke, ko = _rotate(*_halves(k_ref, rows, d), sin_k[rows, :], cos_k[rows, :])
    ke, ko = ke.astype(dtype), ko.astype(dtype)
    seg_k = None if segk_ref is None else segk_ref[:, rows]
    cid_k = None if cidk_ref is None else cidk_ref[:, rows]
    s, visible = _score_block(qe, qo, ke, ko, codes_ref[:, rows], seg_q, seg_k, cid_q, cid_k)
    p = jnp.exp((s - m) - logl)
    dp = _dot(do, v_ref[rows, :], _NT)
    if rate:
      keep = blockwise.dropout_keep(seed_ref[0], b, h, _iota((bq, bk), 0, i * bq), _iota((bq, bk), 1, j * bk), rate)
      dp = jnp.where(keep, dp * (1.0 / (1.0 - rate)), 0.0)
    ds = jnp.where(visible, p * (dp - delta), 0.0).astype(dtype)
    return dqe + _dot(ds, ke, _NN), dqo + _dot(ds, ko, _NN)

  zeros = jnp.zeros((bq, d // 2), jnp.float32)
  dqe, dqo = jax.lax.fori_loop(0, nk, body, (zeros, zeros))
  _store_halves(dq_ref, *_unrotate(dqe * scale, dqo * scale, sin, cos))


# ----------------------------------------------------------------------------------------------
# pallas_call wrappers
# ----------------------------------------------------------------------------------------------
def _compiler_params(platform: str, grid_rank: int):
  if platform in ("gpu", "cuda", "rocm"):
    from jax.experimental.pallas import triton as plgpu
    return plgpu.CompilerParams(num_warps=4, num_stages=2)
  if platform == "tpu":
    from jax.experimental.pallas import tpu as pltpu
    return pltpu.CompilerParams(dimension_semantics=("parallel",) * grid_rank)
  return None


def _specs(n: int, d: int, bq: int, bk: int, tiled: str) -> dict:
  """BlockSpecs for (q, k, v, [do, m, logl, delta], sin_q, cos_q, sin_k, cos_k, codes, seg_q, seg_k, cid_q, cid_k,
  seed).

  `tiled` says which side the grid's last axis walks ("q" or "k"); the other side is passed whole.
  """
  bq_, bk_ = (bq, n) if tiled == "q" else (n, bk)
  qi = (lambda b, h, i: (b, h, i, 0)) if tiled == "q" else (lambda b, h, i: (b, h, 0, 0))
  ki = (lambda b, h, i: (b, h, i, 0)) if tiled == "k" else (lambda b, h, i: (b, h, 0, 0))
  rq = (lambda b, h, i: (b, i, 0)) if tiled == "q" else (lambda b, h, i: (b, 0, 0))
  rk = (lambda b, h, i: (b, i, 0)) if tiled == "k" else (lambda b, h, i: (b, 0, 0))
  ck = (lambda b, h, i: (b, 0, i)) if tiled == "k" else (lambda b, h, i: (b, 0, 0))
  q_tile = pl.BlockSpec((None, None, bq_, d), qi)
  k_tile = pl.BlockSpec((None, None, bk_, d), ki)
  q_rows = pl.BlockSpec((None, None, bq_, 1), qi)
  return dict(
      q=q_tile, k=k_tile, v=k_tile, do=q_tile, m=q_rows, logl=q_rows, delta=q_rows,
      sin_q=pl.BlockSpec((None, bq_, d // 2), rq), cos_q=pl.BlockSpec((None, bq_, d // 2), rq),
      sin_k=pl.BlockSpec((None, bk_, d // 2), rk), cos_k=pl.BlockSpec((None, bk_, d // 2), rk),
      codes=pl.BlockSpec((None, 1, bk_), ck), seg_q=pl.BlockSpec((None, bq_, 1), rq),
      seg_k=pl.BlockSpec((None, 1, bk_), ck), cid_q=pl.BlockSpec((None, bq_, 1), rq),
      cid_k=pl.BlockSpec((None, 1, bk_), ck), seed=pl.BlockSpec((1,), lambda b, h, i: (0,)))


def _call(kernel, names, args, out_shape, out_specs, grid, platform, interpret, name):
  specs = [s if args[k] is not None else None for k, s in names.items()]
  return pl.pallas_call(kernel, out_shape=out_shape, grid=grid, in_specs=specs, out_specs=out_specs,
                        compiler_params=None if interpret else _compiler_params(platform, len(grid)),
                        interpret=interpret, name=name)(*[args[k] for k in names])


def _fwd(q, k, v, tables, codes, seg_q, seg_k, cid_q, cid_k, seed, static):
  rate, bq, bk, platform, interpret = static
  b, h, n, d = q.shape
  sin, cos = tables
  specs = _specs(n, d, bq, bk, "q")
  names = {k_: specs[k_] for k_ in ("q", "k", "v", "sin_q", "cos_q", "sin_k", "cos_k", "codes", "seg_q", "seg_k",
                                    "cid_q", "cid_k", "seed")}
  args = dict(q=q, k=k, v=v, sin_q=sin, cos_q=cos, sin_k=sin, cos_k=cos, codes=codes, seg_q=seg_q, seg_k=seg_k,
              cid_q=cid_q, cid_k=cid_k, seed=seed)
  kernel = functools.partial(_fwd_kernel, bq=bq, bk=bk, nk=n // bk, scale=1.0 / math.sqrt(d), rate=rate,
                             dtype=q.dtype)
  rows = jax.ShapeDtypeStruct((b, h, n, 1), jnp.float32)
  return _call(kernel, names, args, (jax.ShapeDtypeStruct(q.shape, v.dtype), rows, rows),
               (specs["q"], specs["m"], specs["logl"]), (b, h, n // bq), platform, interpret, "rope_flash_fwd")


def _bwd(q, k, v, tables, codes, seg_q, seg_k, cid_q, cid_k, seed, o, m, logl, do, static):
  rate, bq, bk, platform, interpret = static
  b, h, n, d = q.shape
  sin, cos = tables
  delta = jnp.sum(o.astype(jnp.float32) * do.astype(jnp.float32), axis=-1, keepdims=True)
  args = dict(q=q, k=k, v=v, do=do.astype(q.dtype), m=m, logl=logl, delta=delta, sin_q=sin, cos_q=cos, sin_k=sin,
              cos_k=cos, codes=codes, seg_q=seg_q, seg_k=seg_k, cid_q=cid_q, cid_k=cid_k, seed=seed)
  order = ("q", "k", "v", "do", "m", "logl", "delta", "sin_q", "cos_q", "sin_k", "cos_k", "codes", "seg_q", "seg_k",
           "cid_q", "cid_k", "seed")
  common = dict(bq=bq, bk=bk, scale=1.0 / math.sqrt(d), rate=rate, dtype=q.dtype)
  kspecs = _specs(n, d, bq, bk, "k")
  dk, dv = _call(functools.partial(_dkv_kernel, nq=n // bq, **common), {x: kspecs[x] for x in order}, args,
                 (jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)),
                 (kspecs["k"], kspecs["v"]), (b, h, n // bk), platform, interpret, "rope_flash_dkv")
  qspecs = _specs(n, d, bq, bk, "q")
  dq = _call(functools.partial(_dq_kernel, nk=n // bk, **common), {x: qspecs[x] for x in order}, args,
             jax.ShapeDtypeStruct(q.shape, q.dtype), qspecs["q"], (b, h, n // bq), platform, interpret,
             "rope_flash_dq")
  return dq, dk, dv


@functools.partial(jax.custom_vjp, nondiff_argnums=(10,))
def _rope_flash(q, k, v, tables, codes, seg_q, seg_k, cid_q, cid_k, seed, static):
  return _fwd(q, k, v, tables, codes, seg_q, seg_k, cid_q, cid_k, seed, static)[0]


def _rope_flash_fwd(q, k, v, tables, codes, seg_q, seg_k, cid_q, cid_k, seed, static):
  o, m, logl = _fwd(q, k, v, tables, codes, seg_q, seg_k, cid_q, cid_k, seed, static)
  return o, (q, k, v, tables, codes, seg_q, seg_k, cid_q, cid_k, seed, o, m, logl)


def _rope_flash_bwd(static, res, do):
  dq, dk, dv = _bwd(*res, do, static)
  # RoPE tables come from integer positions: no gradient flows to them.
  return dq, dk, dv, None, None, None, None, None, None, None


_rope_flash.defvjp(_rope_flash_fwd, _rope_flash_bwd)


def _block(name: str, value, n: int) -> int:
  # Triton needs power-of-two tiles; a sequence shorter than the block gets one tile of next_pow2(n).
  value = blockwise.check_block(name, value)
  return min(value, pl.next_power_of_2(n))


@register("pallas", causal_ids=True)
def pallas_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask, *,
                     rope: tuple[jax.Array, jax.Array] | None = None, dropout_rate: float = 0.0,
                     dropout_rng: jax.Array | None = None, deterministic: bool = True, block_q: int = 128,
                     block_k: int = 128, interpret: bool | None = None, platform: str | None = None) -> jax.Array:
  """Exact softmax attention from the fused RoPE flash kernel; q, k, v: [B, L, H, D] -> [B, L, H, D].

  Options (`ModelConfig.attention_options`): block_q, block_k (tile sizes); interpret (default: True on
  CPU); platform ("gpu"/"tpu", default: the default backend; picks Triton or Mosaic compiler params).
  rope=None means no rotation (zero angles). Dropout uses `blockwise`'s counter hash, bit-identical.
  """
  b, n, h, d = q.shape
  if d % 2:
    raise ValueError(f"attention='pallas' needs an even head size, got {d}")
  platform = platform or jax.default_backend()
  interpret = (platform == "cpu") if interpret is None else bool(interpret)
  bq, bk = _block("block_q", block_q, n), _block("block_k", block_k, n)
  tile = math.lcm(bq, bk)  # the padded length is a multiple of both (block sizes need not be powers of two)
  length = -(-n // tile) * tile
  if rope is None:
    zeros = jnp.zeros((b, n, d // 2), jnp.float32)
    rope = (zeros, zeros + 1.0)
  sin, cos = (blockwise.pad_to(jnp.broadcast_to(t, (b, n, d // 2)).astype(jnp.float32), 1, length) for t in rope)
  to_heads = lambda x: blockwise.pad_to(jnp.swapaxes(x, 1, 2), 2, length)  # [B, L, H, D] -> [B, H, L', D]
  # Every mask operand at [B, L]: the kernels index them by the grid's batch id, which Triton does not
  # bounds-check, so a mask shared by the batch ([1, L]) would be read past its end.
  full = lambda t: None if t is None else jnp.broadcast_to(t, (b, n))
  mask = mask.replace(key_mask=full(mask.key_mask), segment_ids=full(mask.segment_ids),
                      causal_ids=full(mask.causal_ids))
  codes = blockwise.key_codes(mask, length)[:, None, :]
  seg_q = seg_k = None
  if mask.segment_ids is not None:
    seg = mask.segment_ids.astype(jnp.int32)
    seg_q = blockwise.pad_to(seg, 1, length, -1)[:, :, None]
    seg_k = blockwise.pad_to(seg, 1, length, -2)[:, None, :]
  cid_q = cid_k = None
  if mask.causal_ids is not None:  # padded with 0: padded keys are PAD-coded, padded queries dropped
    cid = blockwise.pad_to(mask.causal_ids.astype(jnp.int32), 1, length, 0)
    cid_q, cid_k = cid[:, :, None], cid[:, None, :]
  rate, seed = blockwise.attention_dropout(dropout_rate, dropout_rng, deterministic, "pallas")
  static = (rate, bq, bk, platform, interpret)
  out = _rope_flash(to_heads(q), to_heads(k), to_heads(v), (sin, cos), codes, seg_q, seg_k, cid_q, cid_k, seed,
                    static)
  return jnp.swapaxes(out[:, :, :n], 1, 2)
