"""The one jitted train step gives the same losses on every layout: 1 device, data parallel, FSDP,
tensor parallel, a mix, gradient accumulation, and 2 processes x 4 devices (gloo collectives).

Each layout runs in its own subprocess (the device count and jax.distributed are fixed at start-up).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "multidevice" / "steps.py"
# Different layouts reduce in different orders: float32 agreement, not bitwise.
RTOL = 2e-5


def _env(devices: int) -> dict:
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
             PYTHONPATH=str(ROOT))
  return env


def _run(devices: int, *args: str) -> dict:
  out = subprocess.run([sys.executable, str(SCRIPT), *args], env=_env(devices), capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def reference():
  return _run(1, "--mesh", "1,1,1")


@pytest.mark.parametrize("devices, mesh, shrink", [
    (8, "8,1,1", 1),   # pure data parallel: params replicated
    (8, "1,8,1", 6),   # FSDP: params and moments split ~8 ways (norms stay replicated)
    (4, "1,1,4", 2.5),  # tensor parallel
    (8, "2,2,2", 3),   # a mix of all three
])
def test_layouts_match_one_device(reference, devices, mesh, shrink):
  got = _run(devices, "--mesh", mesh)
  np.testing.assert_allclose(got["losses"], reference["losses"], rtol=RTOL)
  assert got["devices"] == devices
  # Per-device parameter and optimiser bytes shrink as the layout says.
  assert got["param_bytes_max"] <= reference["param_bytes_max"] / shrink
  assert got["opt_bytes_max"] <= reference["opt_bytes_max"] / shrink
  if shrink == 1:
    assert got["param_bytes_max"] == reference["param_bytes_max"]


def test_gradient_accumulation_matches_the_full_batch(reference):
  got = _run(1, "--mesh", "1,1,1", "--accum", "4")
  np.testing.assert_allclose(got["losses"], reference["losses"], rtol=RTOL)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_match_one_process(reference):
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, str(SCRIPT), "--mesh", "4,2,1", "--coordinator", f"localhost:{port}",
                             "--num_processes", "2", "--process_id", str(i)], env=_env(4), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  got = json.loads(outs[0][0].strip().splitlines()[-1])
  assert got["processes"] == 2 and got["devices"] == 8
  np.testing.assert_allclose(got["losses"], reference["losses"], rtol=RTOL)


def test_predictions_come_back_in_the_examples_order_when_a_process_holds_several_blocks():
  """A mesh whose processes hold batch blocks p, p + 2, ... (as a TPU pod host's chips along the batch axes):
  Runner.predict gives the rows in the processes' order (the examples' order), sums are unchanged."""
  script = ROOT / "tests" / "multidevice" / "predict_order.py"
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, str(script), "--coordinator", f"localhost:{port}", "--num_processes", "2",
                             "--process_id", str(i)], env=_env(4), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  for out, _ in outs:
    got = json.loads(out.strip().splitlines()[-1])
    assert got["row"] == list(range(16)) and got["twice"] == [2 * i for i in range(16)]
    assert got["total"] == got["sums"] == sum(range(16))
