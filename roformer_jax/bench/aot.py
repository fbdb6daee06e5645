"""Ahead-of-time compilation of the real pretraining step for a TPU topology, on this CPU.

  python -m roformer_jax.bench aot --topology v5e:16x16 --preset roformer_v2_large --batch 1024 --seq 512

Needs libtpu (`pip install 'jax[tpu]'`; no TPU is used). Prints one JSON line with per-chip
argument / temporary / total HBM bytes, XLA's FLOP and byte counts, a step-time estimate and the
MFU it implies; exits 2 with a clear message when the layout does not fit the chip's HBM.

v4 and v5p chips have two TensorCores; the topology is described in megacore mode (one JAX device per
chip), which is what JAX uses on those VMs by default. With `--scan`, XLA's cost analysis counts the
layer loop once, so the FLOP / byte counts come from two extra *unrolled* compiles at 2 and 4 layers,
extrapolated linearly to the model's depth (per-layer cost is constant; embeddings, head and optimiser
fall in the intercept). Memory always comes from the real program.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np

from roformer_jax.bench.common import nonnegative_int, positive_int, today, versions

# Per-chip HBM (bytes), bf16 dense peak (FLOP/s) and HBM bandwidth (bytes/s), public spec sheets.
CHIPS = {
    "v4": (32 * 2**30, 275e12, 1.2e12),
    "v5e": (16 * 2**30, 197e12, 0.82e12),
    "v5p": (95 * 2**30, 459e12, 2.76e12),
    "v6e": (32 * 2**30, 918e12, 1.64e12),
}
MEGACORE = ("v4", "v5p")


def topology_devices(topology: str):
  """TPU device objects for e.g. 'v5e:16x16' or 'v4:2x2x4' (no hardware needed)."""
  from jax.experimental import topologies
  from roformer_jax import startup
  family = topology.split(":")[0]
  if family not in CHIPS:
    raise SystemExit(f"aot: unknown TPU family in --topology {topology!r}; expected one of {sorted(CHIPS)}")
  # Megacore: one device per chip with both TensorCores, JAX's default on v4 and v5p VMs.
  extra = {"chip_config_name": "megacore"} if family in MEGACORE else {}
  deadline = time.monotonic() + 120
  while True:
    try:
      with startup.quiet_libtpu_init():  # libtpu reads them as it first loads, here
        return topologies.get_topology_desc(platform="tpu", topology_name=topology, **extra).devices
    except Exception as e:  # noqa: BLE001 -- libtpu missing, locked, or a bad shape: say which
      locked = "lockfile" in str(e)
      if locked and time.monotonic() < deadline:  # another process holds libtpu: wait for it
        time.sleep(5)
        continue
      hint = "Is libtpu installed (pip install 'jax[tpu]')?"
      if locked:
        hint = ("Another JAX process holds libtpu's lock (/tmp/libtpu_lockfile): start other JAX processes "
                "with JAX_PLATFORMS=cpu so they never load libtpu.")
      raise SystemExit(f"aot: cannot describe TPU topology {topology!r} ({type(e).__name__}: {e}). {hint}") from None


def compile_step(model_cfg, devices, mesh_axes: tuple[int, int, int], batch: int, seq: int, predictions: int,
                 optimizer: str = "lamb"):
  """Lowers and compiles the pretraining train step for `devices`; returns (compiled, mesh)."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  from roformer_jax import objectives
  from roformer_jax.model import RoFormerForMaskedLM
  from roformer_jax.train import optim, sharding, step as step_lib

  model = RoFormerForMaskedLM(model_cfg)
  mesh = sharding.make_mesh(*mesh_axes, devices=devices)
  schedule = optim.make_schedule(1e-3, 100, 1000)
  tx = optim.make_optimizer(optimizer, schedule)
  init = lambda rng: model.init(rng, np.ones((1, 8), np.int32))["params"]
  abstract, shardings = step_lib.abstract_state(init, tx, mesh)
  shapes = {"input_ids": (batch, seq), "token_type_ids": (batch, seq), "segment_ids": (batch, seq),
            "positions": (batch, seq), "masked_positions": (batch, predictions),
            "masked_labels": (batch, predictions), "masked_weights": (batch, predictions)}
  abstract_batch = {k: jax.ShapeDtypeStruct(s, jnp.float32 if k == "masked_weights" else jnp.int32,
                                            sharding=sharding.batch_sharding(mesh, 2)) for k, s in shapes.items()}
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_RULES):
    train = step_lib.make_train_step(objectives.masked_lm_loss(model), tx, schedule, shardings, mesh)
    return train.lower(abstract, abstract_batch).compile(), mesh


def xla_cost(compiled) -> tuple[float, float, float]:
  """(FLOPs, bytes accessed, optimal seconds or -1) per device from XLA's cost analysis."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return (float(cost.get("flops", float("nan"))), float(cost.get("bytes accessed", float("nan"))),
          float(cost.get("optimal_seconds", -1.0)))


def extrapolated_cost(model_cfg, devices, mesh_axes, batch: int, seq: int, predictions: int) -> tuple[float, float]:
  """XLA's (FLOPs, bytes) for the unrolled step at `num_layers`, from unrolled compiles at 2 and 4 layers."""
  small = {n: xla_cost(compile_step(model_cfg.replace(num_layers=n, scan_layers=False), devices, mesh_axes,
                                    batch, seq, predictions)[0]) for n in (2, 4)}
  per_layer = [(small[4][i] - small[2][i]) / 2 for i in (0, 1)]
  return tuple(small[2][i] + per_layer[i] * (model_cfg.num_layers - 2) for i in (0, 1))


def analyse(compiled, model_cfg, family: str, chips: int, batch: int, seq: int, predictions: int,
            cost: tuple[float, float] | None = None) -> dict:
  """Per-chip memory, and a step-time / MFU estimate from XLA's counts (or the given (flops, bytes))."""
  from roformer_jax.train import flops
  hbm, peak, bandwidth = CHIPS[family]
  mem = compiled.memory_analysis()
  args, temp, out, alias = (mem.argument_size_in_bytes, mem.temp_size_in_bytes, mem.output_size_in_bytes,
                            mem.alias_size_in_bytes)
  total = args + temp + out - alias  # donated outputs alias their arguments
  xla_flops, xla_bytes, xla_seconds = xla_cost(compiled)
  if cost is not None:
    (xla_flops, xla_bytes), xla_seconds = cost, -1.0
  # XLA's per-chip counts through a roofline: the larger of compute time and HBM-traffic time.
  roofline = max(xla_flops / peak, xla_bytes / bandwidth)
  est = xla_seconds if xla_seconds > 0 else roofline
  model_flops = flops.train_flops(model_cfg, batch, seq, predictions)
  return {"argument_bytes": int(args), "temp_bytes": int(temp), "output_bytes": int(out), "alias_bytes": int(alias),
          "total_bytes": int(total), "hbm_bytes": hbm, "fits": total <= hbm,
          "xla_flops_per_chip": xla_flops, "xla_bytes_per_chip": xla_bytes,
          "est_step_s": est, "est_source": ("xla optimal_seconds" if xla_seconds > 0 else
                                            "roofline of XLA cost analysis" + (" (2/4-layer unrolled, extrapolated)"
                                                                               if cost is not None else "")),
          "model_flops": model_flops, "est_mfu": model_flops / (est * chips * peak) if est > 0 else None,
          "tokens_per_s_per_chip": batch * seq / est / chips if est > 0 else None}


def main(argv=None) -> None:
  p = argparse.ArgumentParser(prog="roformer-bench aot")
  p.add_argument("--topology", required=True, help="e.g. v5e:16x16, v4:2x2x4, v5p:4x4x4, v5e:2x2")
  p.add_argument("--preset", default="roformer_v2_base")
  p.add_argument("--batch", type=positive_int, required=True, help="global batch")
  p.add_argument("--seq", type=positive_int, default=512)
  p.add_argument("--predictions", type=nonnegative_int, default=0,
                 help="masked slots per sequence; 0 = ceil(0.2 * seq)")
  p.add_argument("--mesh", default="1,-1,1", help="data,fsdp,tensor sizes (-1 fills)")
  p.add_argument("--dtype", default="bfloat16")
  p.add_argument("--remat", default="dots")
  p.add_argument("--scan", action="store_true",
                 help="nn.scan over layers (faster compile); FLOP/byte counts then come from unrolled 2- and "
                      "4-layer compiles extrapolated to the full depth")
  p.add_argument("--attention", default="softmax")
  a = p.parse_args(argv)

  import jax
  # No TPU client here loads what the TPU compiler made: a persistent cache (JAX_COMPILATION_CACHE_DIR) would only
  # gain entries that every later run fails to read, with a UserWarning each.
  jax.config.update("jax_enable_compilation_cache", False)
  import roformer_jax as rj
  family = a.topology.split(":")[0]
  devices = topology_devices(a.topology)
  cfg = rj.get_config(a.preset, dtype=a.dtype, remat=a.remat, scan_layers=a.scan, attention=a.attention)
  preds = a.predictions or math.ceil(0.2 * a.seq)
  mesh_axes = tuple(int(x) for x in a.mesh.split(","))
  from roformer_jax.config import ConfigError
  from roformer_jax.train import sharding
  try:  # a bad --mesh or a batch the batch axes do not divide: one line, not XLA's traceback
    data, fsdp, _ = sharding.mesh_shape(*mesh_axes, len(devices))
  except ConfigError as e:
    sys.exit(f"aot: --mesh {a.mesh}: {e}")
  if a.batch % (data * fsdp):
    sys.exit(f"aot: --batch {a.batch} must divide by the mesh's data x fsdp = {data} x {fsdp} ({len(devices)} chips, "
             f"--mesh {a.mesh})")
  try:
    compiled, mesh = compile_step(cfg, devices, mesh_axes, a.batch, a.seq, preds)
  except Exception as e:  # noqa: BLE001 -- the TPU compiler's own out-of-memory verdict
    if "Ran out of memory" not in str(e) and "RESOURCE_EXHAUSTED" not in str(e):
      raise
    detail = next((line.strip() for line in str(e).splitlines() if "memory" in line), str(e)[:300])
    sys.exit(f"aot: does not fit on {a.topology} ({family}, {CHIPS[family][0] / 2**30:.0f} GiB HBM per chip) with "
             f"mesh {a.mesh}, batch {a.batch}, seq {a.seq}: {detail}. Try --remat full, a larger fsdp axis, "
             "or a smaller --batch.")
  # XLA's cost analysis counts a while-loop body once: count the unrolled step instead.
  cost = extrapolated_cost(cfg, devices, mesh_axes, a.batch, a.seq, preds) if a.scan else None
  result = {"topology": a.topology, "chips": len(devices), "device_kind": devices[0].device_kind,
            "preset": a.preset, "batch": a.batch, "seq": a.seq, "mesh": dict(mesh.shape), "dtype": a.dtype,
            "remat": a.remat, "scan_layers": a.scan, "date": today(), **versions("jax", "libtpu"),
            **analyse(compiled, cfg, family, len(devices), a.batch, a.seq, preds, cost)}
  print(json.dumps(result), flush=True)
  if not result["fits"]:
    gib = result["total_bytes"] / 2**30
    sys.exit(f"aot: does not fit: {gib:.2f} GiB per chip needed, a {family} chip has "
             f"{result['hbm_bytes'] / 2**30:.0f} GiB HBM. Try --remat full, a larger fsdp axis, or a smaller --batch.")


if __name__ == "__main__":  # as `python -m roformer_jax.bench <command>`
  from roformer_jax.bench.__main__ import run_as_command
  run_as_command(__spec__.name)
