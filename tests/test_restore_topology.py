"""Checkpoints move between layouts: saved on 8 devices with FSDP, restored onto 1 device and onto a
2 x 4 data x tensor mesh; saved by 2 processes, restored in 1. Training then continues with the
same losses as the run that never moved, within float32 tolerance. Real text, tiny model, the CLI.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


ROOT = Path(__file__).resolve().parents[1]
N = 4


@pytest.fixture(scope="module")
def data(text_corpus):
  return text_corpus("topology", 400)


def _cmd(data, workdir, mesh, *extra):
  d, f, t = mesh
  return [sys.executable, "-m", "pretrain.train", "--config", str(ROOT / "pretrain/configs/tiny_cpu.py"),
          "--workdir", str(workdir), "--config.steps", str(2 * N), "--config.batch_size", "8",
          "--config.seq_len", "64", "--config.log_every", "1", "--config.eval_every", "1000",
          "--config.eval_batches", "1", "--config.checkpoint_every", str(N), "--config.optimizer.warmup_steps", "2",
          "--config.model.overrides.hidden_dropout", "0.1",
          "--config.mesh.data", str(d), "--config.mesh.fsdp", str(f), "--config.mesh.tensor", str(t),
          "--config.data.corpus", str(data / "corpus"), "--config.data.vocab", str(data / "vocab.txt"),
          "--config.data.data_dir", str(data / "cache"), "--config.data.num_workers", "1", *extra]


def _env(devices):
  return dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu",
              XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")


def _run(cmd, devices):
  out = subprocess.run(cmd, cwd=ROOT, env=_env(devices), capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return out


def _losses(workdir):
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r["loss"] for r in rows if "loss" in r}


def _rewind(src, dst):
  """A copy of a finished run with only its step-N checkpoint, as if it had stopped there."""
  shutil.copytree(src, dst)
  shutil.rmtree(dst / "checkpoints" / str(2 * N))
  return dst


@pytest.fixture(scope="module")
def fsdp8(data, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("fsdp8")
  _run(_cmd(data, workdir, (1, 8, 1)), 8)
  return workdir


@pytest.mark.parametrize("devices, mesh", [(1, (1, 1, 1)), (8, (2, 1, 4))])
def test_fsdp_checkpoint_continues_on_another_mesh(data, fsdp8, tmp_path, devices, mesh):
  work = _rewind(fsdp8, tmp_path / "run")
  out = _run(_cmd(data, work, mesh), devices)
  assert f"resumed from {work / 'checkpoints' / str(N)}" in out.stdout
  assert f"'data': {mesh[0]}, 'fsdp': {mesh[1]}, 'tensor': {mesh[2]}" in out.stdout
  want, got = _losses(fsdp8), _losses(work)
  np.testing.assert_allclose([got[s] for s in range(N + 1, 2 * N + 1)],
                             [want[s] for s in range(N + 1, 2 * N + 1)], rtol=1e-5)


def test_two_process_checkpoint_continues_in_one_process(data, fsdp8, tmp_path):
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  two = tmp_path / "two"
  procs = [subprocess.Popen(_cmd(data, two, (1, 8, 1), "--coordinator", f"localhost:{port}", "--num_processes", "2",
                                 "--process_id", str(i)), cwd=ROOT, env=_env(4), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  for p in procs:
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
  # Two processes x 4 devices see the same global batches as one process x 8 devices.
  np.testing.assert_allclose(list(_losses(two).values()), list(_losses(fsdp8).values()), rtol=1e-5)
  work = _rewind(two, tmp_path / "one")
  out = _run(_cmd(data, work, (1, 8, 1)), 8)
  assert "saved by another process layout; repositioned it to step" in out.stdout
  want, got = _losses(fsdp8), _losses(work)
  np.testing.assert_allclose([got[s] for s in range(N + 1, 2 * N + 1)],
                             [want[s] for s in range(N + 1, 2 * N + 1)], rtol=1e-5)
