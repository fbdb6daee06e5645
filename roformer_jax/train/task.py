"""The Task protocol: what `roformer_jax.train.loop.train` needs from pretraining or a fine-tuning task.

A task owns its model, data and metrics; the loop owns everything else (mesh and shardings, mixed
precision through the model config, gradient accumulation, the optimiser, checkpoints and exact resume,
preemption, non-finite stops, evaluation scheduling, best-checkpoint keeping, export, profiling, logging).

Subclass `Task` and fill in:

  name                     short name for logs and the summary ("pretrain", "classify", "pet", ...).
  prepare(local_dir, log)  called first, on every process: read data, tokenizer, checkpoint config. Afterwards
                           `model_config`, `seq_len`, `train_size` and `vocab_file` must be set.
  model_config             the encoder's `ModelConfig` (its dtype picks the MFU peak; export and
                           `model_config.json` use it).
  seq_len                  tokens per example (tokens/s counts batch_size x seq_len).
  train_size               examples in one pass over the training data, or None for an endless stream.
                           With `config.steps = 0` the run lasts `config.epochs` passes of
                           ceil(train_size / batch_size) steps.
  init_params(rng)         fresh *boxed* params (`model.init(...)["params"]` with logical axis names);
                           traced under `jax.eval_shape` and `jax.jit`, so no side effects.
  initial_params(params)   the params a new run starts from, given the fresh sharded ones: fine-tuning
                           replaces the encoder's with a checkpoint's (`roformer_jax.train.pretrained`).
                           Not called when the run resumes from its own checkpoint.
  loss_fn()                `loss_fn(params, batch, rng, step) -> (loss_sum, stats)` (the contract of
                           `roformer_jax.train.step.LossFn`: sums, with `stats["weight"]` to divide by).
  train_iterator(b)        this process's endless iterator of numpy batches of `b` rows, a checkpointable
                           grain iterator (`get_state`/`set_state`); global batch k must be the same rows
                           whatever the process count.
  host_counters            batch keys the loop pops before the step and sums on the host (reported
                           cumulatively, e.g. pretraining's `masked_overflow`).
  eval_batches(b)          this process's batches for one evaluation pass (every process the same count;
                           padding rows carry zero weight). Empty: no evaluation.
  eval_fn()                `eval_fn(params, batch) -> {name: sum}`: scalars or fixed-shape arrays summed over
                           the batch; the loop adds them up over `eval_batches`.
  eval_metrics(sums)       summed eval outputs (numpy) -> {"eval_...": float}. These are logged, written to
                           metrics.jsonl and the summary, and `config.best_metric` names one of them.
  evaluate(params, runner) one evaluation pass -> those metrics; by default `eval_metrics` of the summed
                           `eval_fn` over `eval_batches`. Override it where the metric needs per-example
                           outputs on the host (e.g. NER decodes spans from `runner.predict`'s scores).
  step_flops(metrics)      model FLOPs of one train step given its logged metrics (for MFU); nan = unknown.
  write_assets(workdir)    files `from_pretrained` / `roformer-export` read back (process 0 only).
  export_params(params)    the params `roformer_jax.export.export_hf` writes for `config.export_every`.
  finish(params, runner, out_dir)
                           after the last step, with the best checkpoint's params (`config.best_metric`) or
                           the last ones: final evaluation, test predictions. Returns summary entries.
                           `runner.sums(params, batches)` and `runner.predict(fn, params, batch)` run jitted
                           on the mesh; write files on process 0 only (`jax.process_index() == 0`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

if TYPE_CHECKING:  # importing the task protocol (config files do) must not start JAX
  import numpy as np

  from roformer_jax.config import ModelConfig
  from roformer_jax.train.step import LossFn

Log = Callable[[str], None]


def fixed_seq_len(cfg) -> int:
  """config.seq_len for a task that takes it as given (0 means 'derive it' only where a task does)."""
  from roformer_jax.config import ConfigError
  if cfg.seq_len < 3:
    raise ConfigError(f"config.seq_len = {cfg.seq_len} must be at least 3 ([CLS], a token, [SEP]) for this task")
  return cfg.seq_len


class Task:
  """Base class: see the module docstring. Methods that raise must be overridden."""

  name: str = "task"
  model_config: ModelConfig
  seq_len: int
  train_size: int | None = None
  vocab_file: Any = None
  host_counters: tuple[str, ...] = ()

  def prepare(self, local_dir: Path, log: Log) -> None:
    """Reads the data and the model config; sets the attributes above."""

  def describe(self) -> str:
    """One line on the data, for the log."""
    return ""

  def init_params(self, rng) -> Any:
    raise NotImplementedError

  def initial_params(self, params: Any) -> Any:
    return params

  def loss_fn(self) -> LossFn:
    raise NotImplementedError

  def train_iterator(self, local_batch: int) -> Iterator[dict[str, np.ndarray]]:
    raise NotImplementedError

  def reposition(self, iterator: Any, step: int) -> None:
    """Places a fresh train iterator at global step `step` (a checkpoint written by another process
    count). The pipelines of `roformer_jax.data.pipeline` index global batches, so this is exact."""
    iterator.set_state({"next_index": step})

  def eval_batches(self, local_batch: int) -> Iterable[dict[str, np.ndarray]]:
    return ()

  def eval_fn(self) -> Callable[[Any, dict], dict]:
    raise NotImplementedError

  def eval_metrics(self, sums: dict[str, np.ndarray]) -> dict[str, float]:
    raise NotImplementedError

  def evaluate(self, params: Any, runner: Any) -> dict[str, float]:
    """One evaluation of `params` on the eval data: {"eval_...": float}; {} without eval data."""
    sums = runner.sums(params, self.eval_batches(runner.local_batch))
    return self.eval_metrics(sums) if sums else {}

  def eval_summary(self, metrics: dict[str, float]) -> str:
    """The eval log line's text."""
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())

  def step_flops(self, metrics: dict[str, float]) -> float:
    return math.nan

  def write_assets(self, workdir: Any) -> None:
    """`workdir` is a local Path or an `etils.epath.Path` (gs://)."""
    from roformer_jax.convert.orbax_ckpt import write_model_config
    write_model_config(self.model_config, workdir)
    if self.vocab_file:
      (workdir / ".vocab.txt.tmp").write_text(Path(self.vocab_file).read_text(encoding="utf-8"))
      (workdir / ".vocab.txt.tmp").replace(workdir / "vocab.txt")

  def export_params(self, params: Any) -> Any:
    return params

  def finish(self, params: Any, runner: Any, out_dir: Path) -> dict[str, Any]:
    return {}
