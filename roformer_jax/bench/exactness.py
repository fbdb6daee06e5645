"""`python -m roformer_jax.bench exactness`: each exact attention variant against the einsum reference, on the
device it runs on (compiled; Pallas interpreted on CPU).

The reference is `reference_attention` in float32 at the highest matmul precision. Each row is the relative L2
error (||x - ref|| / ||ref||) of the output and of dq, dk, dv, for fresh random inputs, under the precision a
model of that dtype uses (ModelConfig.matmul_precision="auto"). Rows that see no key are left out of the
output comparison and get no cotangent (variants may define them their own way). Cases: packed documents with
padding, key padding at an odd length, and queries at a subset of the positions (the pruned last layer).

  python -m roformer_jax.bench exactness [--cases packed:2x512x12x64,subset:2x512x12x64] [--variants ...]
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from roformer_jax import attention as attn
from roformer_jax import rope as rope_lib
from roformer_jax.attention.softmax import reference_attention
from roformer_jax.bench.common import machine, today

DEFAULT_CASES = "padding:2x37x4x64,packed:2x512x12x64,subset:2x512x12x64,packed:1x4096x12x64"
DEFAULT_VARIANTS = "softmax,softmax:xla,dot_product,dot_product:cudnn,blockwise,pallas"


def make_case(kind: str, b: int, l: int, h: int, d: int, dtype, seed: int):
  """(q, k, v, mask, rope, query_rope); `subset` queries sit at ceil(0.15 l) sorted random positions."""
  rng = np.random.RandomState(seed)
  k, v = (jnp.asarray(rng.randn(b, l, h, d), dtype) for _ in range(2))
  lens = np.array([l] + [max(1, int(l * 0.6))] * (b - 1))[:b]
  key_mask = np.arange(l)[None] < lens[:, None]
  seg = None
  if kind in ("packed", "subset"):
    seg = np.where(np.arange(l) < l // 3, 1, 2)[None].repeat(b, 0)
    seg[~key_mask] = 0
  rope = rope_lib.rope_angles(rope_lib.default_positions(b, l), d)
  if kind != "subset":
    q = jnp.asarray(rng.randn(b, l, h, d), dtype)
    return q, k, v, attn.AttentionMask(jnp.asarray(key_mask), None if seg is None else jnp.asarray(seg)), rope, None
  p = -(-15 * l // 100)
  pos = np.sort(np.stack([rng.choice(l, p, replace=False) for _ in range(b)]), 1)
  q = jnp.asarray(rng.randn(b, p, h, d), dtype)
  take = lambda t: jnp.take_along_axis(t, jnp.asarray(pos).reshape(pos.shape + (1,) * (t.ndim - 2)), axis=1)
  mask = attn.AttentionMask(jnp.asarray(key_mask), jnp.asarray(seg), jnp.asarray(np.take_along_axis(seg, pos, 1)))
  return q, k, v, mask, rope, tuple(take(t) for t in rope)


def rel(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def check(variant: str, case: str, dtype, seed: int = 0) -> dict:
  kind, shape = case.split(":")
  b, l, h, d = (int(x) for x in shape.split("x"))
  q, k, v, mask, rope, query_rope = make_case(kind, b, l, h, d, dtype, seed)
  name, _, impl = variant.partition(":")
  opts = dict(implementation=impl) if impl else {}
  if name == "pallas" and jax.default_backend() == "cpu":
    opts["interpret"] = True
  extra = {} if query_rope is None else dict(query_rope=query_rope)
  dense = np.broadcast_to(np.asarray(mask.dense()), (b, 1, q.shape[1], l))
  valid = dense.any(-1)[:, 0, :]  # [B, Lq]: rows that see a key
  w = jnp.asarray(np.random.RandomState(seed + 1).randn(b, q.shape[1], h, d), jnp.float32)
  w = w * jnp.asarray(valid, jnp.float32)[:, :, None, None]
  precision = "highest" if jnp.dtype(dtype) == jnp.float32 else "default"  # ModelConfig's "auto"

  def loss(fn, **o):
    return lambda q, k, v: jnp.sum(fn(q, k, v, mask, rope=rope, **extra, **o).astype(jnp.float32) * w)

  row = dict(variant=variant, dtype=jnp.dtype(dtype).name, case=case)
  if query_rope is not None and not attn.supports_query_subset(name):
    row["failed"] = "takes no query subset"
    return row
  up = [x.astype(jnp.float32) for x in (q, k, v)]
  with jax.default_matmul_precision("highest"):
    ref = jax.jit(lambda q, k, v: reference_attention(q, k, v, mask, rope=rope, **extra))(*up)
    ref_g = jax.jit(jax.grad(loss(reference_attention), (0, 1, 2)))(*up)
  fn = attn.get_attention(name)
  start = time.perf_counter()
  try:
    with jax.default_matmul_precision(precision):
      out = jax.jit(lambda q, k, v: fn(q, k, v, mask, rope=rope, **extra, **opts))(q, k, v)
      grads = jax.jit(jax.grad(loss(fn, **opts), (0, 1, 2)))(q, k, v)
  except Exception as e:  # noqa: BLE001  a variant that cannot run here is a row, not the end of the check
    row["failed"] = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"
    return row
  out = np.asarray(out.astype(jnp.float32))
  row["finite"] = bool(np.isfinite(out).all() and all(np.isfinite(np.asarray(g, np.float32)).all() for g in grads))
  row["out"] = float(f"{rel(out[valid], np.asarray(ref)[valid]):.2e}")
  for n, g, r in zip(("dq", "dk", "dv"), grads, ref_g):
    row[n] = float(f"{rel(g.astype(jnp.float32), r):.2e}")
  row["seconds"] = round(time.perf_counter() - start, 1)
  return row


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(prog="roformer-bench exactness", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--cases", default=DEFAULT_CASES, help="kind:BxLxHxD, kind one of padding, packed, subset")
  p.add_argument("--variants", default=DEFAULT_VARIANTS, help="attention[:implementation], comma list")
  p.add_argument("--dtypes", default="float32,bfloat16")
  a = p.parse_args(argv)
  # Errors depend on the device and the compiler: every row says which.
  where = dict(device=machine() if jax.default_backend() == "cpu" else jax.devices()[0].device_kind,
               jax=jax.__version__, date=today())
  for case in filter(None, a.cases.split(",")):
    for dtype in filter(None, a.dtypes.split(",")):
      for variant in filter(None, a.variants.split(",")):
        print(json.dumps({**check(variant, case, jnp.dtype(dtype)), **where}), flush=True)


if __name__ == "__main__":  # as `python -m roformer_jax.bench <command>`
  from roformer_jax.bench.__main__ import run_as_command
  run_as_command(__spec__.name)
