"""One matmul, XLA:CPU against PyTorch, in float32 and with bf16 operands: what the fine-tuning steps' ratios
rest on (docs/BENCHMARKS.md, fine-tuning section).

  python -m roformer_jax.bench matmul --shape 4096,384,1536

[M, K] x [K, N] with float32 accumulation on both sides (JAX: `preferred_element_type=float32`, the form the
model's `roformer_jax.matmul` uses; torch: its own bf16 GEMM, which accumulates in float32). Interleaved
rounds (`bench.common.interleaved_times`); GFLOP/s over the median, and the range over rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics

from roformer_jax.bench.common import interleaved_times, machine, positive_int, positive_ints, today


def main(argv=None) -> None:
  p = argparse.ArgumentParser(prog="python -m roformer_jax.bench matmul", description=__doc__.split("\n")[0])
  p.add_argument("--shape", type=positive_ints, default="4096,384,1536", help="M,K,N")
  p.add_argument("--dtypes", default="float32,bfloat16")
  p.add_argument("--rounds", type=positive_int, default=3)
  p.add_argument("--repeats", type=positive_int, default=10)
  a = p.parse_args(argv)
  if len(a.shape) != 3:
    p.error(f"--shape: M,K,N, got {','.join(map(str, a.shape))!r}")
  m, k, n = a.shape
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch
  from jax import lax

  rng = np.random.RandomState(0)
  x, w = rng.randn(m, k).astype(np.float32), rng.randn(k, n).astype(np.float32)
  product = jax.jit(lambda x, w: lax.dot_general(x, w, (((1,), (0,)), ((), ())),
                                                 preferred_element_type=jnp.float32))
  runs = {}
  for dtype in a.dtypes.split(","):
    jx, jw = jnp.asarray(x, dtype), jnp.asarray(w, dtype)
    tx, tw = torch.from_numpy(x).to(getattr(torch, dtype)), torch.from_numpy(w).to(getattr(torch, dtype))
    runs[f"jax {dtype}"] = lambda jx=jx, jw=jw: jax.block_until_ready(product(jx, jw))
    runs[f"torch {dtype}"] = lambda tx=tx, tw=tw: torch.mm(tx, tw)
  times = interleaved_times(runs, a.rounds, a.repeats)
  gflop = 2 * m * k * n / 1e9
  out = {"shape": [m, k, n],
         "gflops": {name: round(gflop / statistics.median(t for r in ts for t in r)) for name, ts in times.items()},
         "gflops_by_round": {name: [round(gflop / statistics.median(r)) for r in ts] for name, ts in times.items()},
         "torch_threads": torch.get_num_threads(), "device": machine(), "date": today(), "jax": jax.__version__,
         "torch": torch.__version__}
  print(json.dumps(out), flush=True)


if __name__ == "__main__":  # as `python -m roformer_jax.bench <command>`
  from roformer_jax.bench.__main__ import run_as_command
  run_as_command(__spec__.name)
