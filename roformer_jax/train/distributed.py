"""Multi-host start-up: `jax.distributed.initialize` before any device query, always with a timeout."""

from __future__ import annotations

import os

import jax


def _auto_detected() -> str | None:
  """The cluster kind jax.distributed can configure itself for, if any."""
  if os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("CLOUD_TPU_TASK_ID") or os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"):
    return "tpu"
  if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and os.environ.get("SLURM_JOB_ID"):
    return "slurm"
  return None


def init_distributed(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
                     timeout_s: int = 300, cpu_collectives: str = "gloo") -> str:
  """Joins the job's processes; returns how ("explicit", "tpu", "slurm" or "single").

  Explicit flags win (CPU/GPU clusters, local multi-process tests); TPU pods and SLURM are
  auto-detected. Must run before anything asks JAX for devices, or every host hangs waiting.
  """
  if coordinator:
    if num_processes is None or process_id is None:
      raise ValueError("distributed: --coordinator needs --num_processes and --process_id too")
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(coordinator, num_processes, process_id, initialization_timeout=timeout_s)
    return "explicit"
  kind = _auto_detected()
  if kind:
    jax.distributed.initialize(initialization_timeout=timeout_s)
    return kind
  return "single"
