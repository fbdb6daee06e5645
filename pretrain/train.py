"""Pretraining CLI: corpus -> whole-word-masking MLM -> one sharded jitted step -> orbax checkpoints.

  python -m pretrain.train --config pretrain/configs/tiny_cpu.py --workdir DIR [--config.key=value ...]

Restarting the same command resumes from the latest complete checkpoint. Multi-host: TPU pods and
SLURM are detected; elsewhere pass --coordinator HOST:PORT --num_processes N --process_id I.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Pretraining config file (pretrain/configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics.jsonl and TensorBoard events go.")
flags.DEFINE_string("coordinator", None, "host:port of process 0 (explicit multi-process runs).")
flags.DEFINE_integer("num_processes", None, "Number of processes (with --coordinator).")
flags.DEFINE_integer("process_id", None, "This process's index (with --coordinator).")
flags.DEFINE_integer("init_timeout", 300, "Seconds to wait for all processes to join.")


class NonFiniteLoss(RuntimeError):
  pass


def model_config(cfg):
  import roformer_jax
  return roformer_jax.get_config(cfg.model.preset, **dict(cfg.model.overrides), attention=cfg.attention,
                                 dtype=cfg.dtype, scan_layers=cfg.scan_layers, remat=cfg.remat)


class Preemption:
  """SIGTERM (preemption) sets a flag; the loop saves a checkpoint and exits at the next step."""

  def __init__(self):
    self.requested = False
    self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    self.requested = True

  def reached(self, step: int) -> bool:
    import jax
    if jax.process_count() > 1:  # every host must agree on the step it stops at
      from jax.experimental import multihost_utils
      return multihost_utils.reached_preemption_sync_point(step) or self.requested
    return self.requested

  def restore(self):
    signal.signal(signal.SIGTERM, self._previous)


def run(cfg, workdir: str | Path) -> dict[str, Any]:
  """Trains to cfg.steps (resuming if checkpoints exist); returns the final summary."""
  import flax.linen as nn
  import jax
  import numpy as np

  from pretrain import data as data_lib
  from roformer_jax import objectives
  from roformer_jax.model import RoFormerForMaskedLM
  from roformer_jax.train import flops, optim, sharding
  from roformer_jax.train import step as step_lib
  from roformer_jax.train.checkpoint import Checkpointer
  from roformer_jax.train.metrics import MetricsWriter

  from etils import epath
  remote = "://" in str(workdir)  # e.g. gs://bucket/run on a TPU pod: checkpoints go there
  workdir = epath.Path(workdir) if remote else epath.Path(Path(workdir).absolute())
  # metrics.jsonl, TensorBoard events and exports need a local filesystem (appends, atomic renames).
  local_dir = Path.home() / "roformer-logs" / workdir.name if remote else Path(workdir)
  is_main = jax.process_index() == 0
  writer = MetricsWriter(local_dir, cfg.steps, enabled=is_main)
  mesh = sharding.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
  if cfg.batch_size % (jax.process_count() * cfg.accum_steps):
    raise ValueError(f"config.batch_size ({cfg.batch_size}) must divide by processes x accum_steps "
                     f"({jax.process_count()} x {cfg.accum_steps})")
  local_batch = cfg.batch_size // jax.process_count()
  n_batch_shards = mesh.shape["data"] * mesh.shape["fsdp"]
  if (cfg.batch_size // cfg.accum_steps) % n_batch_shards:
    raise ValueError(f"config.batch_size / accum_steps ({cfg.batch_size // cfg.accum_steps}) must divide by "
                     f"mesh.data x mesh.fsdp ({n_batch_shards})")

  # Data: prepared once (tokenised, packed, cached atomically), then a per-process grain iterator.
  data = data_lib.Pipeline(cfg, local_dir)
  # Embedding rows rounded up to a multiple of 128 (fast, evenly shardable matmuls); the extra
  # ids never occur in the data.
  mcfg = model_config(cfg).replace(vocab_size=-(-data.vocab_size // 128) * 128)
  model = RoFormerForMaskedLM(mcfg)
  if is_main:  # what from_pretrained / export read back from this workdir
    from roformer_jax.convert.orbax_ckpt import write_model_config
    write_model_config(mcfg, workdir)
    if data.vocab_file:
      (workdir / ".vocab.txt.tmp").write_text(Path(data.vocab_file).read_text(encoding="utf-8"))
      (workdir / ".vocab.txt.tmp").replace(workdir / "vocab.txt")
  writer.log(f"model: {mcfg}\nmesh: {dict(mesh.shape)} over {jax.device_count()} devices, "
             f"{jax.process_count()} process(es); data: {data.describe()}")

  if cfg.export_every:
    from roformer_jax import export as export_lib
    export_lib.check_exportable(mcfg)  # fail now, not after hours of training

  tx, schedule = optim.from_config(cfg.optimizer, cfg.steps)
  init_params = lambda rng: model.init(rng, np.ones((1, cfg.seq_len), np.int32))["params"]
  abstract, shardings = step_lib.abstract_state(init_params, tx, mesh)

  train_iter = data.train_iterator(local_batch)
  ckpt = Checkpointer(workdir / "checkpoints", save_every=cfg.checkpoint_every, keep=cfg.keep,
                      keep_every=cfg.keep_every or None, async_save=cfg.async_checkpoint)
  restored = ckpt.restore(abstract, train_iter, reposition=data.reposition)
  if restored is None:
    state = step_lib.init_state(init_params, tx, cfg.seed, shardings)
    writer.log("initialised a new run")
  else:
    state, start = restored
    writer.log(f"resumed from {ckpt.path(start)}")
  start = int(jax.device_get(state.step))

  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.LOGICAL_RULES):
    train_step = step_lib.make_train_step(
        objectives.masked_lm_loss(model, cfg.residual_warmup_steps), tx, schedule, shardings, mesh,
        accum_steps=cfg.accum_steps, skip_nonfinite=cfg.skip_nonfinite)
    eval_step = step_lib.make_eval_step(objectives.masked_lm_eval(model))

    # MFU counts the head at the masked tokens actually predicted (metrics["weight"]), not the slots.
    step_flops = lambda predicted: flops.train_flops(mcfg, cfg.batch_size, cfg.seq_len, predicted / cfg.batch_size)
    peak, peak_source = flops.device_peak(cfg.dtype)
    writer.log(f"MFU denominator: {jax.device_count()} x {peak / 1e9:.1f} GFLOP/s ({peak_source})")
    tokens_per_step = cfg.batch_size * cfg.seq_len

    def evaluate(state) -> dict[str, float]:
      sums, labels = {}, []
      for i, batch in enumerate(data.eval_batches(local_batch)):
        if cfg.eval_batches and i >= cfg.eval_batches:
          break
        out = jax.device_get(eval_step(state, sharding.global_batch(batch, mesh)))
        for k, v in out.items():
          sums[k] = sums.get(k, 0.0) + float(v)
        labels.append(batch["masked_labels"][batch["masked_weights"] > 0])
      weight = max(sums.get("weight", 0.0), 1.0)
      # The constant predictor's accuracy: always the most frequent token of these same masks.
      counts = np.bincount(np.concatenate(labels)) if labels else np.zeros(1)
      return {"eval_mlm_accuracy": sums.get("accuracy", 0.0) / weight, "eval_loss": sums.get("loss", 0.0) / weight,
              "eval_majority_accuracy": float(counts.max() / max(counts.sum(), 1)), "eval_tokens": weight}

    preempt = Preemption()
    timer_start, steps_timed, step_time, overflow, mfu, skipped = None, 0, float("nan"), 0, float("nan"), 0
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
      if done % cfg.log_every and done != cfg.steps:
        return
      m = {k: float(v) for k, v in m.items() if k != "finite"}
      m.update(masked_overflow=overflow, skipped_steps=skipped)
      if timed and steps_timed:
        step_time = (now - timer_start) / steps_timed
        timer_start, steps_timed = now, 0
        mfu = step_flops(m["weight"]) / step_time / (peak * jax.device_count())
        m.update(tokens_per_s=tokens_per_step / step_time, mfu=mfu, step_time_s=step_time)
      writer.write(done, m)
      writer.progress(done, m, remaining_s=step_time * (cfg.steps - done))

    profile_dir, profiling = local_dir / "profile", False
    try:
      for step in range(start, cfg.steps):
        if step == cfg.profile_start:
          jax.profiler.start_trace(str(profile_dir))
          profiling = True
        local = next(train_iter)
        overflow += int(local.pop("masked_overflow").sum())
        batch = sharding.global_batch(local, mesh)
        state, metrics = train_step(state, batch)
        if pending is not None:
          report(pending)
        pending = (step + 1, metrics)
        next_step = step + 1
        if profiling and next_step >= cfg.profile_start + cfg.profile_steps:
          jax.block_until_ready(metrics)  # the window ends when its last step has run
          jax.profiler.stop_trace()
          profiling = False
          writer.log(f"profiled steps {cfg.profile_start}..{next_step - 1} into {profile_dir}")
        stop = preempt.reached(next_step)
        if stop or next_step % cfg.checkpoint_every == 0 or next_step == cfg.steps:
          report(pending)  # never checkpoint a non-finite state
          pending = None
          ckpt.save(next_step, state, train_iter, force=True)
        if cfg.export_every and (next_step % cfg.export_every == 0 or next_step == cfg.steps):
          # Straight from the live (sharded) params; every process joins, process 0 writes.
          out = export_lib.export_hf(mcfg, state.params, data.vocab_file, local_dir / "export" / f"step_{next_step}",
                                     overwrite=True)
          writer.log(f"exported {out}")
        if next_step % cfg.eval_every == 0 or next_step == cfg.steps:
          eval_start = time.perf_counter()
          last_eval = evaluate(state)
          writer.write(next_step, last_eval)
          writer.log(f"eval @ {next_step}: masked-token accuracy {last_eval['eval_mlm_accuracy']:.4f} "
                     f"(majority-token baseline {last_eval['eval_majority_accuracy']:.4f}), "
                     f"loss {last_eval['eval_loss']:.4f}")
          if timer_start is not None:  # evaluation time is not step time
            timer_start += time.perf_counter() - eval_start
        if stop:
          writer.log(f"preempted: saved {ckpt.path(next_step)}; rerun the same command to resume")
          break
      if pending is not None:
        report(pending)
    finally:
      if profiling:
        jax.profiler.stop_trace()
      preempt.restore()
      ckpt.close()
      writer.close()

  steps = ckpt.all_steps()
  summary = {"step": int(jax.device_get(state.step)), "eval_mlm_accuracy": last_eval.get("eval_mlm_accuracy"),
             "eval_majority_accuracy": last_eval.get("eval_majority_accuracy"),
             "tokens_per_s": tokens_per_step / step_time if math.isfinite(step_time) else None,
             "mfu": mfu if math.isfinite(mfu) else None,
             "checkpoint": ckpt.path(steps[-1]) if steps else None}
  return summary


def main(argv):
  del argv
  if FLAGS.config.get("retain_host_memory", True):
    from roformer_jax.train import hostmem
    hostmem.reexec_with_retained_memory()  # first: glibc reads its tunables only at start-up
  from absl import logging
  logging.set_verbosity(logging.WARNING)  # orbax and grain log every save at INFO
  from roformer_jax.train.distributed import init_distributed
  # Before anything asks JAX for devices: otherwise each host would start alone and hang later.
  init_distributed(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id, FLAGS.init_timeout)
  import jax
  try:
    summary = run(FLAGS.config, FLAGS.workdir)
  except NonFiniteLoss as e:
    print(f"ERROR: {e}", file=sys.stderr, flush=True)
    sys.exit(3)
  if jax.process_index() == 0:
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
