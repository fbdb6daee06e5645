"""`python -m roformer_jax.bench attention`: FLOPs, memory and time of every attention variant as n grows.

Two kinds of rows share DIR/attention.csv (variant,n,mode,flops_analytic,flops_xla,temp_bytes,time_ms,status):
  <name>         the attention core alone (RoPE + scores + softmax + values), q, k, v [batch, n, heads, d/heads];
  layer:<name>   a whole encoder layer with `attention=<name>`; `layer:rest` is the layer without its
                 attention core (q/k/v/o projections, FFN, norms), the "rest" of linear-attention-flops.md.
status: ok (timed: median of --repeats runs after one warm-up), memory_only (compiled, not run: interpreted
Pallas, or the predicted time is over --cell-budget), oom (compiled footprint over --mem-budget, or the run
ran out of memory), unsupported (the variant refused the shape or platform). flops_xla is XLA's
cost_analysis(), which counts a loop body once: for blockwise/pallas/linear-with-segments it is per block.

`--train-step` instead probes one full training step of a preset (default RoFormerV2-base) per variant
and length in a memory-capped subprocess (DIR/train_step.csv); `--torch` adds the PyTorch `roformer` port at
the preset's shapes and dropout. Every side times one step after `--warmup` untimed ones (default 1).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import resource
import subprocess
import sys
import time
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from roformer_jax import attention as attn
from roformer_jax import rope as rope_lib
from roformer_jax.bench.common import machine, median_time, nonnegative_int, positive_int, positive_ints, today
from roformer_jax.config import ModelConfig, get_config, known_attention

COLUMNS = ("variant", "n", "mode", "flops_analytic", "flops_xla", "temp_bytes", "time_ms", "status")
DEFAULT_LENGTHS = "128,256,512,1024,2048,4096,8192,16384"
MODES = ("fwd", "fwd_bwd")
MIXERS = ("linear", "gau", "fnet", "mixer", "synthesizer")
FLASH = ("blockwise", "pallas")


# ----------------------------------------------------------------------------------------------
# Analytic FLOPs (multiply-adds x 2), forward; fwd_bwd = 3x forward, flash variants 3.5x (they
# recompute the scores in the backward pass).
# ----------------------------------------------------------------------------------------------
def core_flops(name: str, n: int, d: int, heads: int) -> float:
  if name == "linear":
    return 4.0 * n * d * (d // heads)  # φ(K)ᵀV and φ(Q)(KV): n·d·d_head multiply-adds each
  return 4.0 * n * n * d  # QKᵀ and PV: n²·d each


def layer_flops(name: str, n: int, cfg: ModelConfig) -> float:
  d, f, heads = cfg.hidden_size, cfg.intermediate_size, cfg.num_heads
  ffn, proj = 4.0 * n * d * f, 8.0 * n * d * d
  opts = dict(cfg.attention_options)
  if name == "rest":
    return proj + ffn
  if name == "gau":
    e, s = opts.get("gau_expansion", 2) * d, opts.get("gau_key_size", 128)
    return 2.0 * n * d * (2 * e + s) + 2.0 * n * e * d + 2.0 * n * n * (s + e)
  if name == "fnet":
    return 5.0 * n * d * math.log2(n * d) + ffn  # complex FFT: 5 N log2 N
  if name == "mixer":
    return 4.0 * n * opts.get("mixer_hidden", 256) * d + ffn
  if name == "synthesizer":
    dense = 2.0 * n * d * d + 2.0 * n * n * d * heads if opts.get("synthesizer_kind", "dense") == "dense" else 0.0
    return dense + 2.0 * n * n * d + 4.0 * n * d * d + ffn
  return proj + ffn + core_flops(name, n, d, heads)


def analytic(variant: str, n: int, mode: str, cfg: ModelConfig) -> float:
  name = variant.split(":", 1)[-1]
  flops = layer_flops(name, n, cfg) if variant.startswith("layer:") else core_flops(name, n, cfg.hidden_size,
                                                                                    cfg.num_heads)
  if mode == "fwd":
    return flops
  if name in FLASH:  # + one recomputation of QKᵀ (2n²d) in the backward pass
    core = core_flops(name, n, cfg.hidden_size, cfg.num_heads)
    return 3.0 * flops + 0.5 * core
  return 3.0 * flops


# ----------------------------------------------------------------------------------------------
# The measured functions
# ----------------------------------------------------------------------------------------------
class RestOfLayer(nn.Module):
  """An encoder layer whose attention core is the identity on v: projections, FFN, norms only."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x):
    from roformer_jax.model import Dense, FeedForward, Norm
    cfg = self.cfg
    heads = (cfg.num_heads, cfg.head_size)
    q, k, v = (Dense(cfg, heads, ("embed", "heads", "kv"), name=n)(x) for n in ("query", "key", "value"))
    a = Dense(cfg, (cfg.hidden_size,), ("heads", "kv", "embed"), in_axes=2, name="output")(q + k + v)
    x = Norm(cfg, cfg.hidden_size)(x + a)
    return Norm(cfg, cfg.hidden_size)(x + FeedForward(cfg)(x))


def layer_config(base: ModelConfig, name: str, n: int, options: dict) -> ModelConfig:
  opts = dict(options.get(name, {}))
  if name == "mixer":
    opts.setdefault("mixer_max_length", n)
  if name == "synthesizer":
    opts.setdefault("synthesizer_max_length", n)
  return base.replace(attention="softmax" if name == "rest" else name, attention_options=tuple(sorted(opts.items())),
                      num_layers=1, attention_dropout=0.0, hidden_dropout=0.0)


def build(variant: str, n: int, mode: str, base: ModelConfig, batch: int, options: dict):
  """(jitted fn, example args as ShapeDtypeStructs, concrete-args factory)."""
  from roformer_jax.model import EncoderLayer
  dtype = jnp.dtype(base.dtype)
  mask = attn.AttentionMask(jnp.ones((batch, n), bool))
  rope = rope_lib.rope_angles(rope_lib.default_positions(batch, n), base.head_size, base.rope_base)
  if not variant.startswith("layer:"):
    fn = attn.get_attention(variant)
    kwargs = dict(options.get(variant, {}))

    def core(q, k, v):  # under the model's matmul precision, as inside the encoder
      with jax.default_matmul_precision(base.precision):
        return fn(q, k, v, mask, rope=rope, **kwargs)

    shape = jax.ShapeDtypeStruct((batch, n, base.num_heads, base.head_size), dtype)
    if mode == "fwd":
      return jax.jit(core), (shape,) * 3
    loss = lambda q, k, v: jnp.sum(core(q, k, v).astype(jnp.float32))
    return jax.jit(jax.grad(loss, (0, 1, 2))), (shape,) * 3
  name = variant.split(":", 1)[1]
  cfg = layer_config(base, name, n, options)
  if name == "rest":
    module, call = RestOfLayer(cfg), lambda m, p, x: m.apply({"params": p}, x)
  else:
    module = EncoderLayer(cfg)
    call = lambda m, p, x: m.apply({"params": p}, x, mask, rope, True)
  init_len = n if name in ("mixer", "synthesizer") else min(n, 16)
  init_args = (jnp.zeros((batch, init_len, cfg.hidden_size), dtype),)
  if name != "rest":
    small = attn.AttentionMask(jnp.ones((batch, init_len), bool))
    small_rope = rope_lib.rope_angles(rope_lib.default_positions(batch, init_len), cfg.head_size)
    init_args += (small, small_rope, True)
  params = jax.eval_shape(lambda: nn.meta.unbox(module.init(jax.random.PRNGKey(0), *init_args)["params"]))
  x = jax.ShapeDtypeStruct((batch, n, cfg.hidden_size), dtype)
  if mode == "fwd":
    return jax.jit(lambda p, x: call(module, p, x)), (params, x)
  loss = lambda p, x: jnp.sum(call(module, p, x).astype(jnp.float32))
  return jax.jit(jax.grad(loss, (0, 1))), (params, x)


def _concrete(shapes):
  leaves, tree = jax.tree_util.tree_flatten(shapes)
  keys = jax.random.split(jax.random.PRNGKey(0), len(leaves))
  vals = [jax.random.normal(k, s.shape, jnp.float32).astype(s.dtype) * 0.05 for k, s in zip(keys, leaves)]
  return jax.tree_util.tree_unflatten(tree, vals)


def _cost_flops(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", float("nan"))) if cost else float("nan")


QUADRATIC = ("softmax", "dot_product", "synthesizer", "gau")  # hold [batch, heads, n, n] float32 scores


def measure(variant, n, mode, base, batch, options, repeats, mem_budget, cell_budget, previous_ms):
  """One CSV row as a dict."""
  row = dict(variant=variant, n=n, mode=mode, flops_analytic=analytic(variant, n, mode, base) * batch,
             flops_xla="", temp_bytes="", time_ms="", status="")
  try:
    fn, shapes = build(variant, n, mode, base, batch, options)
    compiled = fn.lower(*shapes).compile()
  except Exception as e:  # noqa: BLE001  a refusal at trace, lowering or compile time (a variant's own check,
    # a missing library such as cuDNN, or the compiler rejecting a shape) is this cell's result, not the sweep's end
    row["status"] = "unsupported"
    why = (str(e).strip().splitlines() or [type(e).__name__])[0]
    print(f"  {variant} n={n} {mode}: unsupported ({type(e).__name__}: {why[:160]})", flush=True)
    return row
  mem = compiled.memory_analysis()
  row["flops_xla"], row["temp_bytes"] = _cost_flops(compiled), int(mem.temp_size_in_bytes)
  footprint = mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
  # XLA:CPU's memory_analysis() does not see buffers inside its YNN library fusions: `softmax`'s forward
  # fuses scores -> softmax -> values into one, reports O(n) temp, and still holds the n x n scores
  # (a 16384-token run was OOM-killed past 24 GB). The quadratic variants are budgeted at least that:
  # scores and probabilities, float32, on top of the arguments and outputs.
  if variant.split(":")[-1] in QUADRATIC:
    heads = 1 if variant.split(":")[-1] == "gau" else base.num_heads
    footprint = max(footprint, mem.argument_size_in_bytes + mem.output_size_in_bytes + 2 * batch * heads * n * n * 4)
  interpreted = variant.split(":")[-1] == "pallas" and jax.default_backend() == "cpu"
  predicted = previous_ms * (4.0 if previous_ms else 0.0)  # quadratic growth per doubling, the worst case
  if footprint > mem_budget:
    row["status"] = "oom"
  elif interpreted or (predicted and predicted * (repeats + 1) / 1e3 > cell_budget):
    row["status"] = "memory_only"
  else:
    try:
      args = _concrete(shapes)
      jax.block_until_ready(compiled(*args))  # warm-up
      start = time.perf_counter()
      jax.block_until_ready(compiled(*args))
      times = [time.perf_counter() - start]
      # At least `repeats` runs, more for short cells (about a second in all, at most 30): ms-scale
      # timings on a shared 2-core machine need them.
      for _ in range(max(repeats, min(30, math.ceil(1.0 / max(times[0], 1e-6)))) - 1):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
      row["time_ms"], row["status"] = float(np.median(times) * 1e3), "ok"
      del args
    except Exception as e:  # XLA reports allocation failure as a runtime error
      if "RESOURCE_EXHAUSTED" not in str(e) and "memory" not in str(e).lower():
        raise
      row["status"] = "oom"
  print(f"  {variant:>18} n={n:<6} {mode:<7} temp={row['temp_bytes'] / 2**20:9.1f} MiB  "
        f"time={row['time_ms'] if row['time_ms'] == '' else round(row['time_ms'], 2)!s:>9} ms  {row['status']}",
        flush=True)
  return row


# ----------------------------------------------------------------------------------------------
# Analysis and plots
# ----------------------------------------------------------------------------------------------
def _get(rows, variant, mode, key):
  out = {}
  for r in rows:
    if r["variant"] == variant and r["mode"] == mode and r[key] not in ("", None):
      out[int(r["n"])] = float(r[key])
  return out


def crossover(xs: dict, ys: dict) -> float | None:
  """First n where xs[n] >= ys[n], log-log interpolated between sweep points; None if never."""
  common = sorted(set(xs) & set(ys))
  for a, b in zip(common, common[1:]):
    ra, rb = math.log(xs[a] / ys[a]), math.log(xs[b] / ys[b])
    if ra < 0 <= rb:
      return math.exp(math.log(a) + (math.log(b) - math.log(a)) * (-ra) / (rb - ra))
  if common and xs[common[0]] >= ys[common[0]]:
    return float(common[0])
  return None


def beats_from(rows, variant, reference, mode, key) -> str:
  """The smallest n from which `variant` stays below `reference` in `key` (a reference oom counts as beaten)."""
  mine = {int(r["n"]): r for r in rows if r["variant"] == variant and r["mode"] == mode}
  ref = {int(r["n"]): r for r in rows if r["variant"] == reference and r["mode"] == mode}
  wins = {}
  for n in sorted(set(mine) & set(ref)):
    a, b = mine[n], ref[n]
    if a[key] in ("", None) or a["status"] == "oom":
      continue
    if b["status"] == "oom":
      wins[n] = True
    elif b[key] not in ("", None):
      wins[n] = float(a[key]) < float(b[key])
  if not wins:
    return "n/a (not measured)"
  ns = sorted(wins)
  first = None
  for n in reversed(ns):
    if not wins[n]:
      break
    first = n
  return f"n >= {first}" if first is not None else f"not within n <= {ns[-1]}"


def analysis(rows, base: ModelConfig, batch: int) -> str:
  d = base.hidden_size
  lines = [f"Analysis (linear-attention-flops.md) at d={d}, heads={base.num_heads}, batch={batch}:"]
  for mode in ("fwd", "fwd_bwd"):
    core_t, rest_t = _get(rows, "softmax", mode, "time_ms"), _get(rows, "layer:rest", mode, "time_ms")
    core_x, rest_x = _get(rows, "softmax", mode, "flops_xla"), _get(rows, "layer:rest", mode, "flops_xla")
    if not (core_t or core_x):
      continue
    lines.append(f"[{mode}] attention share of a layer (softmax core / (core + rest)):")
    lines.append("       n  analytic  xla-flops  measured-time")
    for n in sorted(set(core_x) | set(core_t)):
      an = n / (n + 6 * d)
      xs = core_x[n] / (core_x[n] + rest_x[n]) if n in core_x and n in rest_x else float("nan")
      ts = core_t[n] / (core_t[n] + rest_t[n]) if n in core_t and n in rest_t else float("nan")
      lines.append(f"  {n:>6}  {an:8.1%}  {xs:9.1%}  {ts:13.1%}")
    cross = crossover(core_t, rest_t)
    cross_s = f"{cross:.0f}" if cross else "not reached in the sweep"
    lines.append(f"[{mode}] attention time = rest of layer at n ~ {cross_s} (measured) vs 6d = {6 * d} (FLOPs)")
  for mode in ("fwd", "fwd_bwd"):
    for name in MIXERS:
      core = name if name == "linear" else None
      for variant, ref in ([(core, "softmax")] if core else []) + [(f"layer:{name}", "layer:softmax")]:
        if not any(r["variant"] == variant and r["mode"] == mode for r in rows):
          continue
        lines.append(f"[{mode}] {variant:>17} beats {ref:<13}: time {beats_from(rows, variant, ref, mode, 'time_ms')}"
                     f"; memory {beats_from(rows, variant, ref, mode, 'temp_bytes')}")
  for variant in ("blockwise", "pallas", "softmax"):
    for mode in ("fwd", "fwd_bwd"):
      mem = _get(rows, variant, mode, "temp_bytes")
      if 1024 in mem and 16384 in mem:
        lines.append(f"[{mode}] {variant} temp memory n=16384 / n=1024: {mem[16384] / mem[1024]:.1f}x")
  for mode in ("fwd", "fwd_bwd"):
    a, s = _get(rows, "blockwise", mode, "time_ms"), _get(rows, "softmax", mode, "time_ms")
    ratios = [f"{n}:{a[n] / s[n]:.2f}" for n in sorted(set(a) & set(s))]
    if ratios:
      lines.append(f"[{mode}] blockwise / softmax time: " + " ".join(ratios))
  return "\n".join(lines)


def plot(rows, out_dir: str) -> list[str]:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  paths = []
  modes = sorted({r["mode"] for r in rows}, key=lambda m: m != "fwd")
  variants = sorted({r["variant"] for r in rows}, key=lambda v: (v.startswith("layer:"), v))
  names = sorted({v.split(":")[-1] for v in variants})
  colors = {name: plt.get_cmap("tab10" if len(names) <= 10 else "tab20")(i) for i, name in enumerate(names)}
  for key, label, fname in (("time_ms", "time (ms)", "attention_time.png"),
                            ("temp_bytes", "compiled temp memory (bytes)", "attention_memory.png")):
    fig, axes = plt.subplots(1, len(modes), figsize=(6.5 * len(modes), 5), squeeze=False)
    for ax, mode in zip(axes[0], modes):
      for v in variants:
        pts = {n: y for n, y in _get(rows, v, mode, key).items() if y > 0}  # log axes: XLA may report 0 temp
        if pts:
          ns = sorted(pts)
          ax.plot(ns, [pts[n] for n in ns], "--" if v.startswith("layer:") else "-", marker="o", ms=3, label=v,
                  color=colors[v.split(":")[-1]])
      ax.set_xscale("log", base=2)
      ax.set_yscale("log")
      ax.set_xlabel("sequence length n")
      ax.set_ylabel(label)
      ax.set_title(f"{mode}: {label} vs n (solid: attention core, dashed: whole layer)", fontsize=9)
      ax.grid(True, which="both", alpha=0.3)
      ax.legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(out_dir, fname)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
  return paths


# ----------------------------------------------------------------------------------------------
# Training-step probe (subprocess per cell, address space capped)
# ----------------------------------------------------------------------------------------------
def _masked_positions(n: int) -> np.ndarray:
  """The probe's MLM targets, the same on every side: 15% of the n positions, evenly spaced."""
  p = max(1, int(0.15 * n))
  return np.arange(p, dtype=np.int32) * (n // p)


def _train_step_child(spec: dict) -> dict:
  import optax
  import roformer_jax as rj
  cfg = get_config(spec["preset"], attention=spec["variant"], remat=spec["remat"], scan_layers=spec["scan_layers"],
                   attention_options=tuple(sorted(spec["options"].items())))
  if spec["variant"] == "dot_product":
    cfg = cfg.replace(attention_dropout=0.0)  # jax.nn has no attention dropout
  n = spec["n"]
  model = rj.RoFormerForMaskedLM(cfg)
  tx = optax.adam(1e-4)
  ids = jnp.ones((1, n), jnp.int32) * 5
  positions = jnp.asarray(_masked_positions(n))[None]
  labels = jnp.ones(positions.shape, jnp.int32)

  def step(params, opt_state, rng):
    def loss_fn(params):
      logits = model.apply({"params": params}, ids, masked_positions=positions, deterministic=False,
                           rngs={"dropout": rng})
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  params = rj.init_params(model, jax.random.PRNGKey(0), 8)
  opt_state = tx.init(params)
  jstep = jax.jit(step, donate_argnums=(0, 1))
  compiled = jstep.lower(params, opt_state, jax.random.PRNGKey(1)).compile()
  mem = compiled.memory_analysis()
  out = dict(compiled_bytes=int(mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes))
  if out["compiled_bytes"] > spec["cap"] or spec.get("compile_only"):
    return dict(out, status="oom" if out["compiled_bytes"] > spec["cap"] else "memory_only")
  box = [params, opt_state, None]

  def run():  # waits for the whole update, not only the loss
    box[:] = compiled(box[0], box[1], jax.random.PRNGKey(1))
    jax.block_until_ready(box)
  step_s = median_time(run, warmup=spec["warmup"], repeats=1)
  return dict(out, step_s=step_s, loss=float(box[2]), steps=int(box[1][0].count), status="ok")


def _port_config(preset: str, n: int):
  """The `roformer` port at the preset's shapes and dropout (as our side runs it), positions for n tokens."""
  from roformer import RoFormerConfig
  from roformer_jax.bench.train import port_kwargs
  cfg = get_config(preset)
  return RoFormerConfig(**{**port_kwargs(cfg, n), "hidden_dropout_prob": cfg.hidden_dropout,
                           "attention_probs_dropout_prob": cfg.attention_dropout})


def _torch_step_child(spec: dict) -> dict:
  import torch
  from roformer import RoFormerForMaskedLM
  torch.manual_seed(0)
  n = spec["n"]
  model = RoFormerForMaskedLM(_port_config(spec["preset"], n))
  if spec["remat"] == "full":
    model.gradient_checkpointing_enable()
  model.train()
  opt = torch.optim.Adam(model.parameters(), lr=1e-4)
  ids = torch.full((1, n), 5, dtype=torch.long)
  labels = torch.full((1, n), -100, dtype=torch.long)
  labels[0, torch.from_numpy(_masked_positions(n)).long()] = 1
  box = [None]

  def run():
    box[0] = model(input_ids=ids, labels=labels).loss
    box[0].backward()
    opt.step()
    opt.zero_grad(set_to_none=False)
  # The same untimed warm-up steps as our side (PyTorch's first step also pays its lazy allocations).
  step_s = median_time(run, warmup=spec["warmup"], repeats=1)
  steps = int(opt.state[next(iter(model.parameters()))]["step"])
  return dict(step_s=step_s, loss=box[0].item(), steps=steps, status="ok", compiled_bytes="")


def _child_main(spec_json: str) -> None:
  spec = json.loads(spec_json)
  resource.setrlimit(resource.RLIMIT_AS, (spec["cap"], spec["cap"]))
  try:
    out = (_torch_step_child if spec["variant"] == "torch" else _train_step_child)(spec)
  except (MemoryError, RuntimeError, Exception) as e:  # noqa: BLE001  the parent only needs ok / oom
    text = str(e)
    oom = any(s in text for s in ("RESOURCE_EXHAUSTED", "out of memory", "Out of memory", "allocate", "bad_alloc"))
    out = dict(status="oom" if oom else f"error:{type(e).__name__}", error=text.splitlines()[0][:200] if text else "")
  out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  print("RESULT " + json.dumps(out), flush=True)


def train_probe_header(args) -> str:
  """What the probe times, on which shapes and machine (printed before its rows)."""
  cfg = get_config(args.preset)  # an unknown preset: one ConfigError here, not one failed child per cell
  timed = f"step_s: one step after {args.warmup} untimed step(s) on every side, the update waited for"
  if args.compile_only:  # the port has nothing to compile: it still runs
    timed = "ours compiled and sized, not run" + (f"; the port's step_s: one step after {args.warmup} untimed "
                                                   f"step(s)" if args.torch else "")
  line = (f"training-step probe: {args.preset} ({cfg.version}, {cfg.num_layers} x {cfg.hidden_size}, "
          f"{cfg.num_heads} heads, FFN {cfg.intermediate_size}, vocab {cfg.vocab_size}), batch 1, MLM loss at "
          f"15% of positions, Adam, dropout {cfg.hidden_dropout}/{cfg.attention_dropout}, remat={args.remat}, "
          f"scan_layers={not args.no_scan}; {timed}; each cell in its own process capped at {args.mem_cap:g} GiB")
  if args.torch:
    import torch
    line += (f"; torch: the roformer port at the same shapes and dropout, full-vocabulary logits, gradient "
             f"checkpointing {'on' if args.remat == 'full' else 'off'}")
  line += f"; {machine()}, {today()}, jax {jax.__version__}"
  if args.torch:
    line += f", torch {torch.__version__} ({torch.get_num_threads()} threads)"
  return line


def train_probe(args, options: dict) -> None:
  print(train_probe_header(args), flush=True)
  variants = [v for v in args.variants.split(",") if v] + (["torch"] if args.torch else [])
  lengths = args.lengths
  cap = int(args.mem_cap * 2**30)
  path = os.path.join(args.out, "train_step.csv")
  cols = ("variant", "n", "remat", "scan_layers", "compiled_bytes", "peak_rss_bytes", "step_s", "status")
  exists = os.path.exists(path)
  with open(path, "a", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
    if not exists:
      writer.writeheader()
    for variant in variants:
      for n in lengths:
        # Interpreted Pallas is a correctness tool on CPU: size it, never run a full step with it.
        interpreted = variant == "pallas" and jax.default_backend() == "cpu"
        opts = dict(options.get(variant, {}))
        if variant in ("mixer", "synthesizer"):  # fixed-length mixers: sized for this n
          opts.setdefault(f"{variant}_max_length", n)
        spec = dict(preset=args.preset, variant=variant, n=n, remat=args.remat, scan_layers=not args.no_scan,
                    cap=cap, options=opts, compile_only=args.compile_only or interpreted, warmup=args.warmup)
        # --malloc=default: no re-exec; the cell inherits this process's malloc tunables (or none) as they are.
        cmd = [sys.executable, "-m", "roformer_jax.bench", "--malloc=default", "attention", "--child", json.dumps(spec)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.step_timeout)
        result = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
        row = json.loads(result[-1][7:]) if result else dict(status=f"oom (killed, rc={proc.returncode})")
        row.update(variant=variant, n=n, remat=args.remat, scan_layers=spec["scan_layers"])
        writer.writerow(row)
        f.flush()
        print(f"  train step {variant:>12} n={n:<6} remat={args.remat}: {row['status']}  "
              f"compiled={row.get('compiled_bytes', '')}  peak_rss={row.get('peak_rss_bytes', '')}  "
              f"step_s={row.get('step_s', '')}", flush=True)
        if not row["status"].startswith("ok") and not row["status"] == "memory_only":
          break  # longer sequences only need more memory


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
def _parse_options(text: str) -> dict:
  """'blockwise.block_q=256,pallas.block_k=64' -> {'blockwise': {'block_q': 256}, ...}."""
  out: dict = {}
  for item in filter(None, text.split(",")):
    key, value = item.split("=", 1)
    variant, name = key.split(".", 1)
    try:
      value = int(value)
    except ValueError:
      pass
    out.setdefault(variant, {})[name] = value
  return out


def parse_args(argv):
  p = argparse.ArgumentParser(prog="python -m roformer_jax.bench attention", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--variants", default="softmax,dot_product,blockwise,pallas,linear",
                 help="attention functions for core rows (comma list)")
  p.add_argument("--layer-variants", default="rest,softmax,blockwise,linear,gau,fnet,mixer,synthesizer",
                 help="full-layer rows (attention names, plus 'rest'); empty for none")
  p.add_argument("--lengths", type=positive_ints, default=DEFAULT_LENGTHS)
  p.add_argument("--modes", default=",".join(MODES))
  p.add_argument("--out", default="bench_out")
  p.add_argument("--width", type=positive_int, default=768)
  p.add_argument("--heads", type=positive_int, default=12)
  p.add_argument("--ffn", type=positive_int, default=None, help="FFN size (default 4 x width)")
  p.add_argument("--batch", type=positive_int, default=1)
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  p.add_argument("--options", default="",
                 help="per-variant attention options, e.g. blockwise.block_q=256,pallas.block_k=64")
  p.add_argument("--repeats", type=positive_int, default=3)
  p.add_argument("--mem-budget", type=float, default=12.0, help="GiB; larger compiled footprints are not run")
  p.add_argument("--cell-budget", type=float, default=120.0, help="seconds per cell; longer predicted: not run")
  p.add_argument("--no-plots", action="store_true")
  p.add_argument("--append", action="store_true",
                 help="keep DIR/attention.csv's other rows (a sweep split into several runs); same cells are replaced")
  p.add_argument("--analyze-only", action="store_true", help="re-plot and re-analyse DIR/attention.csv")
  p.add_argument("--train-step", action="store_true", help="probe full training steps instead of the sweep")
  p.add_argument("--torch", action="store_true", help="with --train-step: also the PyTorch roformer port")
  p.add_argument("--preset", default="roformer_v2_base")
  p.add_argument("--remat", default="full", choices=("none", "full", "dots"))
  p.add_argument("--mem-cap", type=float, default=16.0, help="GiB address-space cap per training-step probe")
  p.add_argument("--compile-only", action="store_true", help="with --train-step: compile and size, do not run")
  # On XLA:CPU remat saves memory only inside nn.scan: unrolled, the scheduler hoists the recomputation
  # back into the forward pass and the compiled footprint is the same as without remat.
  p.add_argument("--no-scan", action="store_true", help="with --train-step: unrolled layers (default: nn.scan)")
  p.add_argument("--step-timeout", type=float, default=7200.0)
  p.add_argument("--warmup", type=nonnegative_int, default=1,
                 help="with --train-step: untimed steps before the timed one, the same on every side (0: the "
                      "first step after compilation, for cells too long to run twice)")
  args = p.parse_args(argv)
  if args.train_step and args.torch and args.remat == "dots":  # the port has only whole-layer checkpointing
    p.exit(2, f"{p.prog}: error: --torch: the PyTorch port has no --remat dots (use full or none)\n")
  # Checked up front: an unknown name would only show as one "unsupported" row per cell, after a long sweep.
  # (A known variant that refuses a shape or platform stays a row: that is a result.)
  if args.train_step:  # whole models: any `ModelConfig.attention`
    checks = (("--variants", args.variants, known_attention()),)
  else:
    checks = (("--variants", args.variants, attn.available()),
              ("--layer-variants", args.layer_variants, ["rest"] + known_attention()),
              ("--modes", args.modes, list(MODES)))
  for flag, text, known in checks:
    unknown = [v for v in text.split(",") if v and v not in known]
    if unknown:
      p.exit(2, f"{p.prog}: error: {flag}: unknown {', '.join(map(repr, unknown))} (known: {', '.join(known)})\n")
  return args


def main(argv: list[str] | None = None) -> None:
  argv = sys.argv[1:] if argv is None else argv
  if argv[:1] == ["--child"]:
    return _child_main(argv[1])
  args = parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  options = _parse_options(args.options)
  if args.train_step:
    return train_probe(args, options)
  base = ModelConfig(hidden_size=args.width, num_heads=args.heads, intermediate_size=args.ffn or 4 * args.width,
                     num_layers=1, dtype=args.dtype)
  lengths = args.lengths
  modes = [m for m in args.modes.split(",") if m]
  variants = [v for v in args.variants.split(",") if v] + [f"layer:{v}" for v in args.layer_variants.split(",") if v]
  print(f"attention benchmark on {jax.devices()[0].device_kind} ({jax.default_backend()}), d={args.width}, "
        f"heads={args.heads}, batch={args.batch}, {args.dtype}; {machine()}, {today()}, jax {jax.__version__}",
        flush=True)
  path = os.path.join(args.out, "attention.csv")
  old = []
  if (args.append or args.analyze_only) and os.path.exists(path):
    with open(path, newline="") as f:
      old = list(csv.DictReader(f))
  if args.analyze_only:
    rows = old
  else:
    rows = [r for r in old if (r["variant"], int(r["n"]), r["mode"]) not in
            {(v, n, m) for v in variants for n in lengths for m in modes}]
    with open(path, "w", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=COLUMNS)
      writer.writeheader()
      writer.writerows(rows)
      for variant in variants:
        for mode in modes:
          previous = 0.0
          for n in lengths:
            row = measure(variant, n, mode, base, args.batch, options, args.repeats, args.mem_budget * 2**30,
                          args.cell_budget, previous)
            previous = row["time_ms"] if row["status"] == "ok" else previous * 4.0 if previous else 0.0
            rows.append(row)
            writer.writerow(row)
            f.flush()
    print(f"wrote {path}")
  if not args.no_plots:
    for p in plot(rows, args.out):
      print(f"wrote {p}")
  print(analysis(rows, base, args.batch))


if __name__ == "__main__":  # as `python -m roformer_jax.bench <command>`
  from roformer_jax.bench.__main__ import run_as_command
  run_as_command(__spec__.name)
