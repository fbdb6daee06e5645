"""The model's weight matmul: compute-dtype operands, float32 accumulation, a hand-written backward.

`matmul(x, w)` is `x @ w` (or `x @ w.T`) over x's last axis, with w (a float32 parameter) cast to x's
dtype inside. Why it owns its VJP:
  * every product, forward and backward, accumulates in float32 (`preferred_element_type`); the weight
    gradient comes out in w's own dtype (float32) straight from that accumulator, never rounded to bf16;
  * XLA:CPU's fast (YNN) bf16 matmul takes a left operand contracted over its minor axis only. The weight
    gradient x^T g contracts x over its major axis, so XLA would convert both operands to float32 and run a
    float32 matmul at half the bf16 speed. Here x^T is materialised first (`swap_minor`; in bf16 only).
On a 2-core Zen 4 this takes a bf16 FFN forward + backward from 170 to ~380 GFLOP/s (docs/BENCHMARKS.md).
All of this is staged per platform (`lax.platform_dependent`): TPU and GPU get the plain product,
differentiated by JAX. Their matmul units accumulate in float32 whatever the output dtype and their
compilers fold transposes, so the hand-written backward only cost there: v2_base's train step on v5e:4x4,
AOT roofline over XLA's cost analysis, 31.1 ms with it and 27.0 ms without (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

_F32 = jnp.float32


def _dot(a: jax.Array, b: jax.Array, contract_b: int) -> jax.Array:
  """a [M, K] times b contracted over its axis `contract_b`, accumulated in float32."""
  return lax.dot_general(a, b, (((1,), (contract_b,)), ((), ())), preferred_element_type=_F32)


def transpose_copy(x: jax.Array, perm: tuple[int, ...]) -> jax.Array:
  """`jnp.transpose(x, perm)`, on CPU as a real copy that a consuming matmul takes in its standard form.

  XLA:CPU's fast bf16 matmuls want the left operand contracted over its minor axis (and the batch axes
  leading); its simplifier would fold a plain transpose back into the matmul's dimension numbers, and XLA
  would then convert both operands and multiply in float32. A transpose written through a split of one
  of the axes it moves ([.., M, ..] -> [.., M1, M2, ..]) stays a copy. Other platforms get the plain
  transpose, which their compilers fold into the matmul for free, and so does float32 everywhere: XLA:CPU's
  float32 matmuls take a folded transpose at full speed, where the copy only costs (v2_small train step,
  float32: 1,851 -> 1,770 ms at seq 512, unchanged at 128; docs/BENCHMARKS.md).
  """
  perm = tuple(int(p) for p in perm)
  if x.dtype == jnp.float32:
    return jnp.transpose(x, perm)
  for axis in range(x.ndim):
    n = x.shape[axis]
    f = next((f for f in (8, 4, 2, 3, 5, 7) if n % f == 0 and n > f), None)
    if perm.index(axis) != axis and f:
      break
  else:  # (no moved axis can be split: a plain transpose, correct but possibly folded)
    return jnp.transpose(x, perm)

  def split_copy(x):
    split = x.reshape(x.shape[:axis] + (f, n // f) + x.shape[axis + 1:])
    new = [(i,) if i < axis else (axis, axis + 1) if i == axis else (i + 1,) for i in range(x.ndim)]
    out = jnp.transpose(split, tuple(j for p in perm for j in new[p]))
    return out.reshape(tuple(x.shape[p] for p in perm))

  return lax.platform_dependent(x, cpu=split_copy, default=lambda x: jnp.transpose(x, perm))


def swap_minor(x: jax.Array) -> jax.Array:
  """x [..., M, K] -> [..., K, M] as a real copy (`transpose_copy`)."""
  return transpose_copy(x, tuple(range(x.ndim - 2)) + (x.ndim - 1, x.ndim - 2))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _matmul(x: jax.Array, w: jax.Array, out_dtype, w_transposed: bool) -> jax.Array:
  return _matmul_fwd(x, w, out_dtype, w_transposed)[0]


def _matmul_fwd(x, w, out_dtype, w_transposed):
  wc = w.astype(x.dtype)
  x2 = x.reshape(-1, x.shape[-1])
  y = _dot(x2, wc, 1 if w_transposed else 0)
  # w itself is the residual (a parameter, alive anyway): the backward casts it again.
  return y.astype(out_dtype).reshape(x.shape[:-1] + y.shape[-1:]), (x, w)


def _matmul_bwd(out_dtype, w_transposed, res, g):
  x, w = res
  wc = w.astype(x.dtype)
  x2 = x.reshape(-1, x.shape[-1])
  g2 = g.reshape(-1, g.shape[-1]).astype(x.dtype)
  if w_transposed:  # y = x w^T, w [N, K]: dx = g w, dw = g^T x
    dx = _dot(g2, wc, 0)
    dw = _dot(swap_minor(g2), x2, 0)
  else:  # y = x w, w [K, N]: dx = g w^T, dw = x^T g
    dx = _dot(g2, wc, 1)
    dw = _dot(swap_minor(x2), g2, 0)
  return dx.astype(x.dtype).reshape(x.shape), dw.astype(w.dtype)


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def matmul(x: jax.Array, w: jax.Array, *, out_dtype=None, w_transposed: bool = False) -> jax.Array:
  """x [..., K] @ w [K, N] (or w [N, K] with `w_transposed`) -> [..., N] in `out_dtype` (default x's).

  The operands are multiplied in x's dtype (the compute dtype), accumulated in float32; the gradient
  w.r.t. w has w's dtype (on CPU straight from the float32 accumulator; on accelerators JAX's own
  backward, in the compute dtype, then cast). w must be 2-D.
  """
  if w.ndim != 2 or w.shape[1 if w_transposed else 0] != x.shape[-1]:
    raise ValueError(f"matmul: x {x.shape} and w {w.shape} (w_transposed={w_transposed}) do not fit")
  out_dtype = jnp.dtype(out_dtype or x.dtype)

  def plain(x, w):
    dims = (((x.ndim - 1,), (1 if w_transposed else 0,)), ((), ()))
    return lax.dot_general(x, w.astype(x.dtype), dims, preferred_element_type=out_dtype)

  return lax.platform_dependent(x, w, cpu=lambda x, w: _matmul(x, w, out_dtype, w_transposed), default=plain)
