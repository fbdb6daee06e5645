"""The one training loop: any `Task` (pretraining, fine-tuning) under one config.

The loop owns the mesh and shardings, the optimiser, gradient accumulation (in the step), checkpoints with
exact resume (params, optimiser, RNG and the data iterator), SIGTERM preemption, non-finite stops,
evaluation, best-checkpoint keeping, periodic export, profiling and the run's output (progress lines with
tokens/s, MFU and ETA; metrics.jsonl; TensorBoard). The task owns its model, data and metrics
(`roformer_jax.train.task`). The config keys the loop reads are declared once, in `default_config`.
"""

from __future__ import annotations

import json
import math
import signal
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from roformer_jax.config import ConfigError
from roformer_jax.train.task import Task


class NonFiniteLoss(RuntimeError):
  pass


def default_config():
  """The keys `train` reads, with their defaults; task configs start from this and add their own."""
  import ml_collections
  c = ml_collections.ConfigDict()
  c.steps = 1000                    # optimiser steps; 0 = config.epochs passes over the task's training data
  c.epochs = 0                      # with steps = 0: passes of ceil(train examples / batch_size) steps each
  c.batch_size = 32                 # global: all processes and accumulation steps together
  c.accum_steps = 1
  c.seed = 0
  c.log_every = 10
  c.eval_every = 200                # 0 = once per epoch (tasks with a finite training set), else at the end
  c.checkpoint_every = 200          # 0 = once per epoch, as eval_every
  c.keep = 3                        # the last K checkpoints ...
  c.keep_every = 0                  # ... plus every M-th step (0 = none)
  c.async_checkpoint = True
  c.best_metric = ""                # keep the params of the best eval (this eval metric, higher is better) in
                                    # <workdir>/best; the final predictions use them. "" = the last params.
  c.export_every = 0                # HF-style export every N steps (0 = off)
  c.skip_nonfinite = False          # skip a NaN/inf step instead of stopping
  c.profile_start = -1              # jax.profiler trace of steps [start, start + profile_steps) into
  c.profile_steps = 5               # <workdir>/profile (TensorBoard's profile tab); -1 = off
  c.retain_host_memory = True       # glibc malloc keeps freed memory (roformer_jax.train.hostmem); the CLI
                                    # re-executes itself once to set it. Matters for CPU runs.
  c.allow_config_change = False     # resume a workdir whose run_config.json (the config it started with)
                                    # differs in keys other than RESUMABLE_KEYS; the differences are logged
  # Device mesh (-1 fills the remaining devices).
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  # Optimiser (roformer_jax.train.optim.from_config); the default is the RoFormerV2 pretraining recipe:
  # LAMB, eps 1e-6, weight decay 0.01 on every tensor (but Adam's bias correction, which the recipe,
  # pretrain.configs.common.v2_recipe, turns off).
  c.optimizer = ml_collections.ConfigDict(dict(
      name="lamb", learning_rate=1.76e-3, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01, bias_correction=True,
      decay_exclude=(), clip_norm=0.0, warmup_steps=100, decay="linear", end_factor=0.0, points={}))
  return c


class Preemption:
  """SIGTERM (preemption) or a first Ctrl-C sets a flag; the loop saves a checkpoint and exits at the next
  step. A second Ctrl-C interrupts at once (the last good checkpoint stays as it was)."""

  def __init__(self):
    self.requested = False
    self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}

  def _handle(self, signum, frame):
    self.requested = True
    if signum == signal.SIGINT:
      signal.signal(signal.SIGINT, signal.default_int_handler)
      print("interrupted: saving a checkpoint after this step (Ctrl-C again to stop at once)", flush=True)

  def reached(self, step: int) -> bool:
    import jax
    if jax.process_count() > 1:  # every host must agree on the step it stops at
      from jax.experimental import multihost_utils
      return multihost_utils.reached_preemption_sync_point(step) or self.requested
    return self.requested

  def restore(self):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}


class Runner:
  """Runs a task's jitted functions on the run's mesh, for evaluation and `Task.finish`.

  Outputs are replicated, so every process gets the whole global batch's values back.
  """

  def __init__(self, task: Task, mesh, local_batch: int):
    self.task, self.mesh, self.local_batch = task, mesh, local_batch
    self._jitted: dict[Any, Callable] = {}
    self._orders: dict[int, Any] = {}  # global rows -> process_order, or None where it is the identity

  def _jit(self, fn: Callable) -> Callable:
    import jax
    from roformer_jax.train import sharding
    if fn not in self._jitted:
      self._jitted[fn] = jax.jit(fn, out_shardings=sharding.replicated(self.mesh))
    return self._jitted[fn]

  def _run(self, fn: Callable[[Any, dict], dict], params: Any, local_batch: dict) -> Any:
    import jax
    from roformer_jax.train import sharding
    return jax.device_get(self._jit(fn)(params, sharding.global_batch(local_batch, self.mesh)))

  def predict(self, fn: Callable[[Any, dict], dict], params: Any, local_batch: dict) -> dict:
    """`fn(params, global batch)` for this process's numpy `local_batch`; numpy outputs, their batch-major rows
    in the processes' order (process 0's rows, then process 1's, ...: the examples' order in the pipelines)."""
    import jax
    import numpy as np
    from roformer_jax.train import sharding
    out = self._run(fn, params, local_batch)
    rows = jax.process_count() * len(next(iter(local_batch.values())))
    if rows not in self._orders:  # once per batch size, not per batch; None: the identity
      order = sharding.process_order(self.mesh, rows)
      self._orders[rows] = None if (order == np.arange(rows)).all() else order
    order = self._orders[rows]
    if order is None:
      return out
    return jax.tree_util.tree_map(lambda x: x[order] if np.ndim(x) and np.shape(x)[0] == rows else x, out)

  def sums(self, params: Any, batches: Iterable[dict], fn: Callable | None = None) -> dict:
    """`fn` (default: the task's eval_fn) summed over `batches`, in float64 on the host."""
    import numpy as np
    total: dict[str, Any] = {}
    for batch in batches:
      fn = fn or self._eval_fn()
      for k, v in self._run(fn, params, batch).items():
        total[k] = total.get(k, 0.0) + np.asarray(v, np.float64)
    return total

  def _eval_fn(self):
    if "eval" not in self._jitted:
      self._jitted["eval"] = self.task.eval_fn()
    return self._jitted["eval"]


def _steps_per_epoch(task: Task, cfg) -> int | None:
  return None if task.train_size is None else max(1, math.ceil(task.train_size / cfg.batch_size))


def total_steps(task: Task, cfg) -> int:
  """config.steps, or config.epochs passes over the task's training data."""
  if cfg.steps:
    return cfg.steps
  per_epoch = _steps_per_epoch(task, cfg)
  if per_epoch is None or cfg.epochs <= 0:
    raise ConfigError(f"config.steps is 0 and config.epochs is {cfg.epochs}: set config.steps"
                      + ("" if per_epoch is None else " or a positive config.epochs")
                      + ("" if per_epoch is not None else f" (task {task.name!r} has no finite epoch)"))
  return cfg.epochs * per_epoch


# Keys a resumed run may change: lengths, intervals, retention, the device layout (resume is exact across
# layouts), where the prepared data lives, and the checkpoint a fine-tune started from (read at step 0 only).
RESUMABLE_KEYS = ("steps", "epochs", "log_every", "eval_every", "checkpoint_every", "keep", "keep_every",
                  "async_checkpoint", "export_every", "skip_nonfinite", "profile_start", "profile_steps",
                  "retain_host_memory", "allow_config_change", "mesh.", "init", "data.data_dir",
                  "data.num_workers", "eval_batches", "scan_layers", "remat")
RUN_CONFIG = "run_config.json"


def _flat_config(cfg) -> dict[str, Any]:
  """{"optimizer.learning_rate": 2e-05, ...}: the config's leaves, normalised through JSON (tuples -> lists)."""
  def flat(node, prefix):
    for key, value in node.items():
      if isinstance(value, dict):
        yield from flat(value, f"{prefix}{key}.")
      else:
        yield f"{prefix}{key}", value
  return dict(flat(json.loads(cfg.to_json_best_effort(sort_keys=True)), ""))


def check_resume_config(cfg, workdir: Any, log: Callable[[str], None]) -> None:
  """Refuses to resume `workdir` under a config that differs from the one it started with (in a key outside
  RESUMABLE_KEYS): a changed k, seed, learning rate or data path would otherwise mix two runs silently."""
  path = workdir / RUN_CONFIG
  if not path.exists():  # a workdir from before run_config.json: nothing to compare with
    return
  try:
    then = json.loads(path.read_text(encoding="utf-8"))
  except (OSError, ValueError) as e:
    raise ConfigError(f"{path}: unreadable ({e}); it records the config this workdir started with") from None
  now = _flat_config(cfg)
  changed = sorted(k for k in then.keys() | now.keys() if then.get(k, "<unset>") != now.get(k, "<unset>")
                   and not any(k == r or (r.endswith(".") and k.startswith(r)) for r in RESUMABLE_KEYS))
  if not changed:
    return
  diff = "; ".join(f"config.{k} = {then.get(k, '<unset>')!r} there, {now.get(k, '<unset>')!r} now" for k in changed)
  if cfg.get("allow_config_change"):
    log(f"resuming under a changed config (config.allow_config_change): {diff}")
    return
  raise ConfigError(f"{workdir} started under another config ({path}): {diff}. Rerun with its values, use a new "
                    "--workdir, or resume anyway with --config.allow_config_change=True")


def write_run_config(cfg, workdir: Any) -> None:
  """The config a new run starts with, as `check_resume_config` reads it back (written atomically)."""
  tmp = workdir / f".{RUN_CONFIG}.tmp"
  tmp.write_text(json.dumps(_flat_config(cfg), indent=1, sort_keys=True), encoding="utf-8")
  tmp.replace(workdir / RUN_CONFIG)


def check_config(cfg) -> None:
  """The loop's own keys: sizes and counts that must be positive (or >= 0), named when they are not."""
  # keep >= 1: with 0 no checkpoint would stay, and the run could never resume.
  rules = [("steps", 0), ("epochs", 0), ("batch_size", 1), ("accum_steps", 1), ("seq_len", 0), ("log_every", 1),
           ("eval_every", 0), ("checkpoint_every", 0), ("keep", 1), ("keep_every", 0), ("export_every", 0),
           ("optimizer.warmup_steps", 0)]
  for key, low in rules:
    parent, _, leaf = key.rpartition(".")
    node = cfg.get(parent, {}) if parent else cfg
    if leaf in node and not (isinstance(node[leaf], int) and not isinstance(node[leaf], bool) and node[leaf] >= low):
      raise ConfigError(f"config.{key} = {node[leaf]!r} must be an integer >= {low}")
  if cfg.get("seq_len") in (1, 2):  # 0 means "what the data needs" where a task derives it
    raise ConfigError(f"config.seq_len = {cfg.seq_len} must be at least 3 ([CLS], a token, [SEP])")
  lr = cfg.get("optimizer", {}).get("learning_rate")
  if lr is not None and not 0 < lr < math.inf:
    raise ConfigError(f"config.optimizer.learning_rate = {lr!r} must be a finite number > 0")
  best = cfg.get("best_metric") or ""
  if best.endswith("loss"):  # the best checkpoint keeps the highest value: a loss would keep the worst params
    raise ConfigError(f"config.best_metric = {best!r}: the best checkpoint keeps the highest value of its metric, "
                      "so a loss would keep the worst params; name an accuracy, F1, BLEU, ... metric")


def _check_batch(cfg, mesh) -> int:
  """This process's rows per step; the global batch must split evenly over processes, micro-steps, devices."""
  import jax
  if cfg.batch_size % (jax.process_count() * cfg.accum_steps):
    raise ConfigError(f"config.batch_size ({cfg.batch_size}) must divide by processes x accum_steps "
                      f"({jax.process_count()} x {cfg.accum_steps})")
  n_batch_shards = mesh.shape["data"] * mesh.shape["fsdp"]
  if (cfg.batch_size // cfg.accum_steps) % n_batch_shards:
    raise ConfigError(f"config.batch_size / accum_steps ({cfg.batch_size // cfg.accum_steps}) must divide by "
                      f"mesh.data x mesh.fsdp ({n_batch_shards})")
  local = cfg.batch_size // jax.process_count()
  # Each process feeds its own `local` rows of every global batch (roformer_jax.data.pipeline), so its devices must
  # hold `local` rows that no other process's devices hold. Batch axes fewer than the processes (e.g. mesh.tensor
  # across hosts) would make each process's rows a whole batch of its own: different params on each host, silently.
  from roformer_jax.train import sharding
  blocks = sharding.process_blocks(mesh, cfg.batch_size)
  owners: dict[tuple[int, int], set[int]] = {}
  for p, held_blocks in blocks.items():
    for block in held_blocks:
      owners.setdefault(block, set()).add(p)
  held = {p: sum(b - a for a, b in blocks.get(p, ())) for p in range(jax.process_count())}
  if any(len(o) > 1 for o in owners.values()) or any(n != local for n in held.values()):
    (a, b), o = next(((k, o) for k, o in owners.items() if len(o) > 1), next(iter(owners.items())))
    raise ConfigError(f"config.mesh: {dict(mesh.shape)} puts rows {a}..{b - 1} of the batch on the devices of "
                      f"process(es) {sorted(o)}, but each of the {jax.process_count()} processes feeds {local} rows of "
                      f"its own: mesh.data x mesh.fsdp ({n_batch_shards}) must split the batch over the processes "
                      "(keep mesh.tensor within one process's devices)")
  return local


def train(task: Task, cfg, workdir: str | Path) -> dict[str, Any]:
  """Trains `task` to the configured step count, resuming if `workdir` has checkpoints; returns the summary.

  The summary: task, step, the last eval metrics, tokens_per_s, mfu, checkpoint (the latest), with
  `config.best_metric` best_step / best_<metric> / best_checkpoint, and whatever `task.finish` returns.
  """
  import flax.linen as nn
  import jax
  from etils import epath

  from roformer_jax.train import flops, optim, sharding
  from roformer_jax.train import step as step_lib
  from roformer_jax.train.checkpoint import BestCheckpoint, Checkpointer
  from roformer_jax.train.metrics import MetricsWriter

  check_config(cfg)
  remote = "://" in str(workdir)  # e.g. gs://bucket/run on a TPU pod: checkpoints go there
  workdir = epath.Path(workdir) if remote else epath.Path(Path(workdir).expanduser().absolute())
  # metrics.jsonl, TensorBoard events and exports need a local filesystem (appends, atomic renames).
  local_dir = Path.home() / "roformer-logs" / workdir.name if remote else Path(workdir)
  is_main = jax.process_index() == 0
  mesh = sharding.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
  local_batch = _check_batch(cfg, mesh)
  writer = MetricsWriter(local_dir, 0, enabled=is_main)
  try:
    task.prepare(local_dir, writer.log)
    steps = total_steps(task, cfg)
  except BaseException:
    writer.close()
    raise
  writer.total_steps = steps
  per_epoch = _steps_per_epoch(task, cfg)
  eval_every = cfg.eval_every or per_epoch or steps
  checkpoint_every = cfg.checkpoint_every or per_epoch or steps
  mcfg = task.model_config
  epochs = f", {steps / per_epoch:g} epochs of {per_epoch} steps" if per_epoch else ""
  writer.log(f"task: {task.name}, {steps} steps{epochs}\nmodel: {mcfg}\nmesh: {dict(mesh.shape)} over "
             f"{jax.device_count()} devices, {jax.process_count()} process(es); data: {task.describe()}")

  if cfg.export_every:
    from roformer_jax import export as export_lib
    export_lib.check_exportable(mcfg)  # fail now, not after hours of training

  tx, schedule = optim.from_config(cfg.optimizer, steps, cfg.accum_steps)
  abstract, shardings = step_lib.abstract_state(task.init_params, tx, mesh)

  train_iter = task.train_iterator(local_batch)
  ckpt = Checkpointer(workdir / "checkpoints", save_every=checkpoint_every, keep=cfg.keep,
                      keep_every=cfg.keep_every or None, async_save=cfg.async_checkpoint)
  best = BestCheckpoint(workdir / "best", cfg.best_metric, async_save=cfg.async_checkpoint) if cfg.best_metric else None
  try:
    # The restore first: a checkpoint of another model is refused there, naming a tensor that differs.
    restored = ckpt.restore(abstract, train_iter, reposition=task.reposition)
    if restored is not None:
      check_resume_config(cfg, workdir, writer.log)
    elif is_main:
      write_run_config(cfg, workdir)
    if restored is None:
      state = step_lib.init_state(task.init_params, tx, cfg.seed, shardings)
      params = task.initial_params(state.params)
      if params is not state.params:  # e.g. a checkpoint's encoder: the moments start from these params
        opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
        state = state.replace(params=params, opt_state=opt_state)
      writer.log("initialised a new run")
    else:
      state, saved_step = restored
      if saved_step > steps:  # else the run would end at once, as if it had finished
        raise ConfigError(f"checkpoint {ckpt.path(saved_step)} is past this config's {steps} steps (config.steps, "
                          "or config.epochs): give at least as many to resume it, or use a new --workdir")
      writer.log(f"resumed from {ckpt.path(saved_step)}")
    if is_main:  # what from_pretrained / export read back; after the restore, which refuses another model's workdir
      task.write_assets(workdir)
    if best is not None and best.step is not None:
      writer.log(f"best {best.metric} so far: {best.value:.4f} at step {best.step}")
  except BaseException:
    if best is not None:
      best.close()
    ckpt.close()
    writer.close()
    raise
  start = int(jax.device_get(state.step))

  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_RULES):
    train_step = step_lib.make_train_step(task.loss_fn(), tx, schedule, shardings, mesh,
                                          accum_steps=cfg.accum_steps, skip_nonfinite=cfg.skip_nonfinite)
    runner = Runner(task, mesh, local_batch)
    peak, peak_source = flops.device_peak(mcfg.dtype)
    writer.log(f"MFU denominator: {jax.device_count()} x {peak / 1e9:.1f} GFLOP/s ({peak_source})")
    tokens_per_step = cfg.batch_size * task.seq_len

    def evaluate(params) -> dict[str, float]:
      return task.evaluate(params, runner)  # {} for a task without eval data

    preempt = Preemption()
    # Running counts go on from a resumed checkpoint's (saved with it), as in an uninterrupted run.
    timer_start, steps_timed, step_time, mfu = None, 0, float("nan"), float("nan")
    skipped = ckpt.counters.get("skipped_steps", 0)
    counters = {k: ckpt.counters.get(k, 0) for k in task.host_counters}
    last_eval: dict[str, float] = {}
    pending = None  # (step, metrics) of the previous step, checked one step late to keep the device busy

    def check(pending):
      nonlocal skipped
      step, m = pending
      m = jax.device_get(m)
      if not bool(m["finite"]):
        what = f"step {step}: loss is {float(m['loss'])} and grad norm {float(m['grad_norm'])}"
        if cfg.skip_nonfinite:  # the step kept the previous params and optimiser state
          skipped += 1
          writer.log(f"WARNING: {what}; skipped ({skipped} so far)")
        else:
          raise NonFiniteLoss(
              f"{what}; stopping. The last good checkpoint "
              f"({ckpt.path(ckpt.all_steps()[-1]) if ckpt.all_steps() else 'none'}) is untouched. "
              "Lower the learning rate, enable clipping, or set --config.skip_nonfinite=True to skip such steps.")
      return step, m

    def report(pending):
      """Checks a finished step and logs it at log points. Timing starts at the end of the first step
      after a (re)start, which includes compilation, so that step is logged without a speed."""
      nonlocal timer_start, steps_timed, step_time, mfu
      done, m = check(pending)
      now = time.perf_counter()
      timed = timer_start is not None
      if timed:
        steps_timed += 1
      else:
        timer_start, steps_timed = now, 0
      if done % cfg.log_every and done != steps:
        return
      m = {k: float(v) for k, v in m.items() if k != "finite"}
      m.update(counters, skipped_steps=skipped)
      if timed and steps_timed:
        step_time = (now - timer_start) / steps_timed
        timer_start, steps_timed = now, 0
        mfu = task.step_flops(m) / step_time / (peak * jax.device_count())
        m.update(tokens_per_s=tokens_per_step / step_time, step_time_s=step_time)
        if math.isfinite(mfu):
          m["mfu"] = mfu
      write_start = time.perf_counter()
      writer.write(done, m)  # the first write opens the files and imports tensorboardX: not step time
      writer.progress(done, m, remaining_s=step_time * (steps - done))
      timer_start += time.perf_counter() - write_start

    profile_dir, profiling, stopped = local_dir / "profile", False, False
    try:
      for step in range(start, steps):
        if step == cfg.profile_start:
          jax.profiler.start_trace(str(profile_dir))
          profiling = True
        local = next(train_iter)
        for k in counters:
          counters[k] += int(local.pop(k).sum())
        state, metrics = train_step(state, sharding.global_batch(local, mesh))
        if pending is not None:
          report(pending)
        pending = (step + 1, metrics)
        next_step = step + 1
        if profiling and next_step >= cfg.profile_start + cfg.profile_steps:
          jax.block_until_ready(metrics)  # the window ends when its last step has run
          jax.profiler.stop_trace()
          profiling = False
          writer.log(f"profiled steps {cfg.profile_start}..{next_step - 1} into {profile_dir}")
        stopped = preempt.reached(next_step)
        save_now = stopped or next_step % checkpoint_every == 0 or next_step == steps
        eval_now = next_step % eval_every == 0 or next_step == steps
        if (save_now or eval_now) and pending is not None:
          report(pending)  # never checkpoint or evaluate a non-finite state
          pending = None
        if cfg.export_every and (next_step % cfg.export_every == 0 or next_step == steps):
          # Straight from the live (sharded) params; every process joins, process 0 writes.
          out = export_lib.export_hf(mcfg, task.export_params(state.params), task.vocab_file,
                                     local_dir / "export" / f"step_{next_step}", overwrite=True)
          writer.log(f"exported {out}")
        if eval_now:
          eval_start = time.perf_counter()
          last_eval = evaluate(state.params)
          if last_eval:
            writer.write(next_step, last_eval)
            writer.log(f"eval @ {next_step}: {task.eval_summary(last_eval)}")
          if best is not None and best.update(next_step, state.params, last_eval):
            writer.log(f"new best {best.metric} {best.value:.4f}: saved {best.path()}")
          if timer_start is not None:  # evaluation time is not step time
            timer_start += time.perf_counter() - eval_start
        if save_now:
          if best is not None:
            # A run checkpoint never gets ahead of the best one: a run resumed from step S has every best
            # of the evals up to S on disk (a later eval it redoes gives the same value, so no resave).
            best.wait()
          ckpt.save(next_step, state, train_iter, force=True, counters=dict(counters, skipped_steps=skipped))
        if stopped:
          writer.log(f"preempted: saved {ckpt.path(next_step)}; rerun the same command to resume")
          break
      if pending is not None:
        report(pending)
      preempt.restore()  # from here Ctrl-C interrupts (the final evaluation has no step to save after)
      extra: dict[str, Any] = {}
      if not stopped:
        params = state.params
        if best is not None and best.step is not None:
          params = best.restore(abstract.params)
          writer.log(f"final evaluation with the best params ({best.metric} {best.value:.4f} at step {best.step})")
        extra = task.finish(params, runner, local_dir) or {}
    finally:
      if profiling:
        jax.profiler.stop_trace()
      preempt.restore()
      if best is not None:
        best.close()
      ckpt.close()
      writer.close()

  saved = ckpt.all_steps()
  summary = {"task": task.name, "step": int(jax.device_get(state.step)), **last_eval,
             "tokens_per_s": tokens_per_step / step_time if math.isfinite(step_time) else None,
             "mfu": mfu if math.isfinite(mfu) else None, "checkpoint": ckpt.path(saved[-1]) if saved else None}
  if stopped:  # the CLIs exit with PREEMPTED's code, so that schedulers and scripts rerun the command
    summary["preempted"] = True
  if best is not None:
    summary.update({"best_step": best.step, f"best_{best.metric}": best.value if best.step is not None else None,
                    "best_checkpoint": best.path()})
  summary.update(extra)
  return summary


def evaluate_only(task: Task, cfg, workdir: str | Path) -> dict[str, Any]:
  """No training: `task.finish` on the task's initial params (e.g. PET zero-shot: the checkpoint's MLM head
  and a pattern), on the run's mesh, with the run's log. Returns the summary."""
  import flax.linen as nn
  import jax
  import optax

  from roformer_jax.train import sharding
  from roformer_jax.train import step as step_lib
  from roformer_jax.train.metrics import MetricsWriter

  workdir = Path(workdir).expanduser().absolute()
  mesh = sharding.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
  local_batch = _check_batch(cfg, mesh)
  writer = MetricsWriter(workdir, 0, enabled=jax.process_index() == 0)
  try:
    task.prepare(workdir, writer.log)
    writer.log(f"task: {task.name}, evaluation only (no training steps); data: {task.describe()}")
    tx = optax.identity()
    _, shardings = step_lib.abstract_state(task.init_params, tx, mesh)
    params = task.initial_params(step_lib.init_state(task.init_params, tx, cfg.seed, shardings).params)
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_RULES):
      out = task.finish(params, Runner(task, mesh, local_batch), workdir)
  finally:
    writer.close()
  return {"task": task.name, "step": 0, **out}

