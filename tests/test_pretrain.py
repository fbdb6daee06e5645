"""The pretraining CLI end to end: output files, exact resumption after SIGKILL (also mid-save),
fallback from a corrupt latest checkpoint, and non-finite losses. Real text, tiny model.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
KILL = ROOT / "tests" / "multidevice" / "kill_at_save.py"
N = 6  # checkpoint interval; runs are 2N steps


@pytest.fixture(scope="module")
def data(text_corpus):
  """A small real corpus (People's Daily lines) as a .txt folder, its char vocab, a shared cache."""
  return text_corpus("pretrain", 600)


def _args(data, workdir, *extra):
  return ["--config", str(ROOT / "pretrain/configs/tiny_cpu.py"), "--workdir", str(workdir),
          "--config.steps", str(2 * N), "--config.batch_size", "8", "--config.seq_len", "64",
          "--config.log_every", "1", "--config.eval_every", "1000", "--config.eval_batches", "2",
          "--config.checkpoint_every", str(N), "--config.optimizer.warmup_steps", "2",
          "--config.model.overrides.hidden_dropout", "0.1",  # dropout on: the RNG must resume too
          "--config.data.corpus", str(data / "corpus"), "--config.data.vocab", str(data / "vocab.txt"),
          "--config.data.data_dir", str(data / "cache"), "--config.data.num_workers", "1", *extra]


def _run(args, script=None, env=None, expect=0):
  cmd = [sys.executable] + ([str(script)] if script else ["-m", "pretrain.train"]) + args
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", **(env or {})))
  assert out.returncode == expect, (out.returncode, out.stdout[-2000:], out.stderr[-3000:])
  return out


def _losses(workdir):
  """step -> loss, the last value written for each step (a resumed run rewrites its steps)."""
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("straight")
  out = _run(_args(data, workdir, "--config.export_every", str(N), "--config.profile_start", "2",
                   "--config.profile_steps", "2"))
  return workdir, out


def test_outputs(straight):
  workdir, out = straight
  summary = json.loads(out.stdout.strip().splitlines()[-1])
  assert summary["step"] == 2 * N and summary["checkpoint"].endswith(f"checkpoints/{2 * N}")
  assert {"eval_mlm_accuracy", "tokens_per_s", "mfu"} <= summary.keys() and summary["tokens_per_s"] > 0
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  steps = [r for r in rows if "loss" in r]
  assert [r["step"] for r in steps] == list(range(1, 2 * N + 1))
  # Step 1 compiles, so it carries no speed; every later step does.
  assert all({"step", "loss", "tokens_per_s", "mfu", "learning_rate", "grad_norm"} <= r.keys() for r in steps[1:])
  assert any(p.name.startswith("events.out.tfevents") for p in workdir.iterdir())
  assert "tok/s" in out.stdout and "ETA" in out.stdout and "MFU" in out.stdout
  assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()) == [N, 2 * N]
  # --config.profile_start/steps: a profiler trace of the window, readable by TensorBoard.
  assert list((workdir / "profile").rglob("*.xplane.pb")) and "profiled steps 2..3" in out.stdout + out.stderr


@pytest.mark.parametrize("mode, kill_at", [("after", N), ("during", 2 * N)])
def test_sigkill_then_resume_gives_identical_losses(data, straight, tmp_path, mode, kill_at):
  """SIGKILL once the save at N committed, or while the save at 2N is being written; then rerun."""
  _run(_args(data, tmp_path), script=KILL, env={"KILL_AT": str(kill_at), "KILL_MODE": mode}, expect=-9)
  committed = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert committed == [N]  # an interrupted save never looks complete
  out = _run(_args(data, tmp_path))
  assert f"resumed from {tmp_path / 'checkpoints' / str(N)}" in out.stdout
  want, got = _losses(straight[0]), _losses(tmp_path)
  assert got == want  # bitwise: the same floats, step by step


def test_sigterm_saves_and_exits_then_resumes(data, straight, tmp_path):
  """A preemption notice (SIGTERM) at step N-1: the run saves at the next step, prints its summary marked
  preempted and exits with code 75 (rerun to resume), not 0 (done). Ctrl-C takes the same path
  (tests/test_finetune.py::test_first_ctrl_c_asks_for_a_save_the_second_interrupts)."""
  out = _run(_args(data, tmp_path, "--config.checkpoint_every", str(N - 1)), script=KILL,
             env={"KILL_AT": str(N - 1), "KILL_MODE": "term"}, expect=75)
  assert f"preempted: saved {tmp_path / 'checkpoints' / str(N)}" in out.stdout
  summary = json.loads(out.stdout.strip().splitlines()[-1])
  assert summary["preempted"] is True and summary["step"] == N
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [N - 1, N]
  out = _run(_args(data, tmp_path))
  assert f"resumed from {tmp_path / 'checkpoints' / str(N)}" in out.stdout
  assert _losses(tmp_path) == _losses(straight[0])


def test_a_workdir_of_another_model_is_refused_and_left_untouched(data, straight, tmp_path):
  """Rerunning into a workdir with another model: one line naming the checkpoint and a differing tensor,
  exit code 2; its checkpoints are not set aside as corrupt and its model_config.json is not rewritten."""
  work = tmp_path / "run"
  shutil.copytree(straight[0], work)
  steps, config = sorted(p.name for p in (work / "checkpoints").iterdir()), (work / "model_config.json").read_text()
  out = _run(_args(data, work, "--config.model.preset", "roformer_v2_small"), expect=2)
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith(f"pretrain: error: checkpoint {work / 'checkpoints'}/{2 * N} holds a different model or "
                         "optimiser state than this config (params/roformer/"), out.stderr
  assert "shape" in last and last.endswith("use a new --workdir, or the config it was trained with"), last
  assert sorted(p.name for p in (work / "checkpoints").iterdir()) == steps
  assert (work / "model_config.json").read_text() == config


def test_corrupt_latest_checkpoint_falls_back(data, straight, tmp_path):
  work = tmp_path / "run"
  shutil.copytree(straight[0], work)
  latest = work / "checkpoints" / str(2 * N) / "state"
  for f in latest.rglob("*"):  # truncate every data file of the latest state
    if f.is_file() and f.stat().st_size > 0 and "metadata" not in f.name:
      f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
  out = _run(_args(data, work))
  assert f"checkpoint {work / 'checkpoints' / str(2 * N)} could not be restored" in out.stdout
  assert f"resumed from {work / 'checkpoints' / str(N)}" in out.stdout
  assert (work / "checkpoints" / f"{2 * N}.corrupt").is_dir()  # set aside, not deleted
  assert {s: _losses(work)[s] for s in range(N + 1, 2 * N + 1)} == {
      s: _losses(straight[0])[s] for s in range(N + 1, 2 * N + 1)}


def test_nonfinite_loss_stops_and_keeps_last_checkpoint(data, tmp_path):
  blow_up = ["--config.optimizer.name", "adamw", "--config.optimizer.learning_rate", "1e30",
             "--config.checkpoint_every", "1", "--config.steps", "6"]
  out = _run(_args(data, tmp_path, *blow_up), expect=3)
  stop = re.search(r"ERROR: step (\d+): loss is (\S+) and grad norm (\S+); stopping", out.stderr)
  assert stop and {"nan", "inf"} & {stop.group(2), stop.group(3).rstrip(";")}, out.stderr[-2000:]
  assert f"checkpoints/{int(stop.group(1)) - 1}) is untouched" in out.stderr
  assert "--config.skip_nonfinite=True" in out.stderr
  saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert saved and max(saved) < 6  # nothing non-finite was checkpointed
  skip = tmp_path / "skip"
  out = _run(_args(data, skip, *blow_up, "--config.skip_nonfinite", "True"))
  assert json.loads(out.stdout.strip().splitlines()[-1])["step"] == 6
  assert "skipped (1 so far)" in out.stdout


def test_periodic_and_cli_export_load_in_the_pytorch_port(straight, tmp_path):
  """--config.export_every writes HF folders during training; roformer-export reads the orbax workdir.
  Both load in the `roformer` PyTorch port with its ordinary from_pretrained and match our logits."""
  import numpy as np
  import torch
  from roformer import RoFormerForMaskedLM

  import roformer_jax as rj
  workdir, out = straight
  assert f"exported {workdir / 'export' / f'step_{N}'}" in out.stdout
  cli = subprocess.run([sys.executable, "-m", "roformer_jax.export", "--from", str(workdir / "checkpoints" / str(2 * N)),
                        "--to", str(tmp_path / "hf")], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300)
  assert cli.returncode == 0, cli.stderr[-2000:]
  model, params = rj.from_pretrained(workdir)  # the orbax workdir, latest step
  ids = np.array([[2] + list(range(10, 40)) + [3], [2] + list(range(50, 70)) + [3] + [0] * 10])
  ours = np.asarray(model.apply({"params": params}, ids))
  for folder in (workdir / "export" / f"step_{2 * N}", tmp_path / "hf"):
    peer = RoFormerForMaskedLM.from_pretrained(folder).eval()
    with torch.no_grad():
      theirs = peer(input_ids=torch.tensor(ids), attention_mask=torch.tensor(ids != 0)).logits.numpy()
    np.testing.assert_allclose(ours[:, :, :theirs.shape[-1]], theirs, atol=1e-5, rtol=0)
