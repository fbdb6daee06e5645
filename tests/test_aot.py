"""Ahead-of-time compilation of the real pretraining step for a TPU topology, on this CPU (libtpu from
PyPI; no TPU needed), so pod readiness and HBM fit are checked in CI."""

import json
import os
import subprocess
import sys
from pathlib import Path

from roformer_jax import startup

ROOT = Path(__file__).resolve().parents[1]


def _aot(*args, env=None):
  return subprocess.run([sys.executable, "-m", "roformer_jax.bench", "aot", *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=600, env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})))


def test_tiny_compiles_for_v5e_2x2(tmp_path):
  # remat "full": libtpu 0.0.42.1 segfaults in its cost model on this tiny bf16 step with "dots".
  out = _aot("--topology", "v5e:2x2", "--preset", "tiny", "--batch", "8", "--seq", "128", "--remat", "full",
             env={"JAX_COMPILATION_CACHE_DIR": str(tmp_path / "cache")})
  assert out.returncode == 0, out.stderr[-3000:]
  # Nothing a later run could not read back (it warned "Error reading persistent compilation cache entry").
  assert not list(tmp_path.rglob("jit_train_step-*")), sorted(tmp_path.rglob("*"))
  if not startup.tpu_present():  # libtpu's start-up finds no TPU metadata: no "could not determine ..." / E0000
    assert not out.stderr.strip(), out.stderr[-3000:]
  r = json.loads(out.stdout.strip().splitlines()[-1])
  assert r["chips"] == 4 and r["device_kind"].startswith("TPU v5")
  import jax
  assert r["jax"] == jax.__version__ and r["libtpu"] != "not installed"  # the compiler that sized it
  assert r["mesh"] == {"data": 1, "fsdp": 4, "tensor": 1} and r["fits"]
  assert 0 < r["argument_bytes"] <= r["total_bytes"] < r["hbm_bytes"]
  assert r["temp_bytes"] > 0 and r["xla_flops_per_chip"] > 0 and r["est_step_s"] > 0
  # XLA's per-chip FLOPs cover at least the analytic model FLOPs' share of one chip.
  assert r["xla_flops_per_chip"] >= 0.8 * r["model_flops"] / r["chips"]


def test_libtpu_gets_a_one_host_slice_only_for_its_start_up_and_only_without_a_tpu():
  env = {"PATH": "/bin"}
  with startup.quiet_libtpu_init(env) as quieted:
    assert quieted == (not startup.tpu_present())
    assert env == ({"PATH": "/bin", "TPU_WORKER_HOSTNAMES": "localhost", "TPU_HOST_BOUNDS": "1,1,1"} if quieted else
                   {"PATH": "/bin"})
  assert env == {"PATH": "/bin"}  # jax.distributed would take TPU_WORKER_HOSTNAMES for a TPU pod
  for own in ({"TPU_ACCELERATOR_TYPE": "v5litepod-16"}, {"TPU_WORKER_HOSTNAMES": "10.0.0.2,10.0.0.3"}):
    env = dict(own)
    with startup.quiet_libtpu_init(env) as quieted:  # the user's own slice is left as it is
      assert not quieted and env == own
    assert env == own


def test_a_layout_that_cannot_fit_fails_clearly():
  out = _aot("--topology", "v5e:2x2", "--preset", "tiny", "--batch", "1024", "--seq", "4096", "--remat", "none")
  assert out.returncode != 0
  # Either XLA's TPU compiler refuses (it checks HBM itself) or our per-chip total exceeds HBM.
  assert "aot: does not fit" in out.stderr and "16 GiB HBM" in out.stderr, out.stderr[-2000:]


def test_a_batch_the_batch_axes_do_not_divide_is_one_line():
  out = _aot("--topology", "v5e:2x2", "--preset", "tiny", "--batch", "6", "--seq", "128")
  assert out.returncode != 0
  assert out.stderr.strip().splitlines()[-1] == (
      "aot: --batch 6 must divide by the mesh's data x fsdp = 1 x 4 (4 chips, --mesh 1,-1,1)"), out.stderr[-2000:]
  out = _aot("--topology", "v5e:2x2", "--preset", "tiny", "--batch", "8", "--mesh", "1,3,1")
  assert out.returncode != 0 and out.stderr.strip().splitlines()[-1].startswith("aot: --mesh 1,3,1: config.mesh: "), \
      out.stderr[-2000:]


def test_unknown_topology_is_named():
  out = _aot("--topology", "v9x:2x2", "--preset", "tiny", "--batch", "8")
  assert out.returncode != 0 and "unknown TPU family in --topology 'v9x:2x2'" in out.stderr


def test_scanned_step_on_megacore_v4_gets_an_extrapolated_estimate():
  """v4 is described in megacore mode (one device per chip, as JAX runs it there); with --scan, XLA's
  counts come from unrolled 2- and 4-layer compiles extrapolated to the model's depth."""
  out = _aot("--topology", "v4:2x2x1", "--preset", "tiny", "--batch", "8", "--seq", "128", "--remat", "full",
             "--scan")
  assert out.returncode == 0, out.stderr[-3000:]
  assert startup.tpu_present() or not out.stderr.strip(), out.stderr[-3000:]
  r = json.loads(out.stdout.strip().splitlines()[-1])
  assert r["chips"] == 4 and r["device_kind"] == "TPU v4" and r["hbm_bytes"] == 32 * 2**30
  assert r["scan_layers"] and "extrapolated" in r["est_source"] and r["est_step_s"] > 0
  assert r["xla_flops_per_chip"] >= 0.8 * r["model_flops"] / r["chips"]
