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


# The shared loop itself (roformer_jax.train.loop.train) in this process, on a tiny in-memory regression task:
# a few milliseconds a step, so each test runs the loop several times.

class _Tiny:
  """A `Task`: y = x . w over 16 rows; `evals` scripts the eval metric, `nan_steps` the steps whose loss is nan."""

  def __new__(cls, evals=None, nan_steps=()):
    import jax.numpy as jnp
    import numpy as np
    from roformer_jax.data import pipeline
    from roformer_jax.train.task import Task

    class Tiny(Task):
      name, seq_len, train_size = "tiny", 1, 16

      def prepare(self, local_dir, log):
        self.model_config = type("Config", (), {"dtype": "float32", "__repr__": lambda self: "tiny"})()
        x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
        self.data = {"x": x, "y": x @ np.arange(1, 5, dtype=np.float32)}

      def init_params(self, rng):
        return {"w": jnp.zeros((4,), jnp.float32)}

      def loss_fn(self):
        nan = jnp.array(sorted(nan_steps) or [-1])
        def loss(params, batch, rng, step):
          total = jnp.sum((batch["x"] @ params["w"] - batch["y"]) ** 2 * batch["weights"])
          return jnp.where(jnp.any(nan == step), jnp.nan, total), {"weight": jnp.sum(batch["weights"])}
        return loss

      def train_iterator(self, b):
        return iter(pipeline.examples_train_dataset(self.data, batch_size=b, seed=0, process_index=0, process_count=1))

      def evaluate(self, params, runner):
        return {"eval_score": evals.pop(0)} if evals else {"eval_score": 0.0}

      def write_assets(self, workdir):
        pass

    return Tiny()


@pytest.fixture
def tiny(monkeypatch):
  """(task, config) makers for the loop; no MFU peak measurement, synchronous saves."""
  from roformer_jax.train import flops, loop
  monkeypatch.setattr(flops, "device_peak", lambda dtype="float32": (1e9, "test"))

  def config(**overrides):
    c = loop.default_config()
    c.update(dict(steps=4, batch_size=4, log_every=1, eval_every=2, checkpoint_every=2, async_checkpoint=False))
    c.optimizer.update(dict(name="adamw", learning_rate=0.1, warmup_steps=0, decay="constant"))
    c.update(overrides)
    return c
  return _Tiny, config


def _rows(workdir):
  return [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_best_checkpoint_keeps_a_step_it_holds_when_a_resumed_run_redoes_that_eval(tmp_path):
  """A resumed run on another layout can redo the best's eval with a value higher in the last bits: the params
  on record are that step's already, so they stay (the old code deleted them, then saved again: a crash in
  between left no best at all)."""
  import numpy as np
  from roformer_jax.train.checkpoint import BestCheckpoint
  first = BestCheckpoint(tmp_path / "best", "eval_score", async_save=False)
  assert first.update(2, {"w": np.ones(3, np.float32)}, {"eval_score": 0.5})
  first.close()
  again = BestCheckpoint(tmp_path / "best", "eval_score", async_save=False)
  assert (again.step, again.value) == (2, 0.5)
  assert not again.update(2, {"w": np.full(3, 2.0, np.float32)}, {"eval_score": 0.5 + 1e-7})
  np.testing.assert_array_equal(again.restore({"w": np.zeros(3, np.float32)})["w"], np.ones(3))
  assert again.update(4, {"w": np.full(3, 3.0, np.float32)}, {"eval_score": 0.6}) and again.step == 4
  again.close()


def test_loop_resume_keeps_an_older_best_and_refuses_fewer_steps_than_saved(tiny, tmp_path):
  """A resumed run keeps the best of before (an older step than the latest) against a worse eval; a config
  with fewer steps than the saved checkpoint is refused by name, not ended at once as if it had finished."""
  from roformer_jax.config import ConfigError
  from roformer_jax.train import loop
  task, config = tiny
  first = loop.train(task(evals=[5.0, 1.0]), config(best_metric="eval_score"), tmp_path)
  assert (first["best_step"], first["best_eval_score"], first["step"]) == (2, 5.0, 4)
  longer = loop.train(task(evals=[3.0]), config(steps=6, best_metric="eval_score"), tmp_path)
  assert (longer["best_step"], longer["best_eval_score"], longer["step"]) == (2, 5.0, 6)
  with pytest.raises(ConfigError, match=r"checkpoints/6 is past this config's 3 steps"):
    loop.train(task(), config(steps=3, best_metric="eval_score"), tmp_path)


def test_loop_refuses_to_resume_under_another_config_by_key(tiny, tmp_path, capsys):
  """A workdir resumed under a config that differs from the one it started with (a seed, a learning rate)
  is refused naming the keys; lengths, intervals and the mesh may change; allow_config_change resumes."""
  from roformer_jax.config import ConfigError
  from roformer_jax.train import loop
  task, config = tiny
  loop.train(task(), config(), tmp_path)
  assert json.loads((tmp_path / "run_config.json").read_text())["optimizer.learning_rate"] == 0.1
  other = config(seed=3, steps=6)
  other.optimizer.learning_rate = 0.01
  with pytest.raises(ConfigError, match=r"config.optimizer.learning_rate = 0.1 there, 0.01 now; "
                                        r"config.seed = 0 there, 3 now\. .*allow_config_change=True"):
    loop.train(task(), other, tmp_path)
  assert loop.train(task(), config(steps=6, log_every=2, checkpoint_every=3), tmp_path)["step"] == 6
  other.steps, other.allow_config_change = 8, True
  capsys.readouterr()
  assert loop.train(task(), other, tmp_path)["step"] == 8
  assert "resuming under a changed config (config.allow_config_change): config.optimizer.learning_rate" \
      in capsys.readouterr().out


def test_loop_skipped_steps_count_on_across_a_resume(tiny, tmp_path, monkeypatch):
  """skip_nonfinite: the count of skipped steps is saved with the checkpoint, so a resumed run goes on from it."""
  from roformer_jax.train import loop
  task, config = tiny
  cfg = config(steps=4, skip_nonfinite=True, eval_every=100, checkpoint_every=100)
  with monkeypatch.context() as m:
    m.setattr(loop.Preemption, "reached", lambda self, step: step == 2)  # a preemption after step 2
    assert loop.train(task(nan_steps=(0, 2)), cfg, tmp_path)["preempted"]
  loop.train(task(nan_steps=(0, 2)), cfg, tmp_path)
  assert {r["step"]: r["skipped_steps"] for r in _rows(tmp_path) if "loss" in r} == {1: 1, 2: 1, 3: 2, 4: 2}


def test_skipped_step_keeps_the_learning_rate_schedule_on_the_step(tiny):
  """A skipped (non-finite) step keeps the params and moments, but the schedule's count advances with the
  step: the rate applied next is the logged schedule(step), warm-up and decay unmoved."""
  import jax
  import optax
  from roformer_jax.train import optim, sharding
  from roformer_jax.train import step as step_lib
  task, config = tiny
  t = task(nan_steps=(1,))
  t.prepare(None, print)
  cfg = config()
  cfg.optimizer.update(dict(warmup_steps=2, decay="linear"))
  tx, schedule = optim.from_config(cfg.optimizer, 6)
  mesh = sharding.make_mesh(1, 1, 1)
  _, shardings = step_lib.abstract_state(t.init_params, tx, mesh)
  state = step_lib.init_state(t.init_params, tx, 0, shardings)
  train_step = step_lib.make_train_step(t.loss_fn(), tx, schedule, shardings, mesh, skip_nonfinite=True)
  batches = t.train_iterator(4)
  with jax.set_mesh(mesh):
    finite = []
    for _ in range(3):
      state, metrics = train_step(state, sharding.global_batch(next(batches), mesh))
      finite.append(bool(metrics["finite"]))
  assert finite == [True, False, True]
  counts = [s.count for s in jax.tree_util.tree_leaves(
      state.opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByScheduleState))
      if isinstance(s, optax.ScaleByScheduleState)]
  assert [int(c) for c in counts] == [int(state.step)] == [3]


def test_loop_speed_leaves_out_the_first_metrics_write(tiny, tmp_path, monkeypatch):
  """The first metrics row opens metrics.jsonl and TensorBoard (importing tensorboardX, ~1 s): not step time."""
  import time
  from roformer_jax.train import loop
  from roformer_jax.train.metrics import MetricsWriter
  task, config = tiny
  open_files = MetricsWriter._open
  monkeypatch.setattr(MetricsWriter, "_open", lambda self: (time.sleep(1.0), open_files(self)))
  loop.train(task(), config(steps=3, eval_every=100, checkpoint_every=100), tmp_path)
  times = [r["step_time_s"] for r in _rows(tmp_path) if "step_time_s" in r]
  assert len(times) == 2 and max(times) < 0.5, times


def test_summary_line_is_strict_json():
  """The CLIs' final line: a non-finite metric is written as metrics.jsonl writes it ("nan"), since json.dumps
  alone writes NaN, which strict JSON readers (jq, JSON.parse) refuse."""
  from roformer_jax.train.metrics import json_safe
  summary = {"task": "t", "eval_loss": float("nan"), "best": {"x": float("inf"), "ok": 1.5}, "steps": [1, -float("inf")]}
  line = json.dumps(json_safe(summary), allow_nan=False)
  assert json.loads(line) == {"task": "t", "eval_loss": "nan", "best": {"x": "inf", "ok": 1.5}, "steps": [1, "-inf"]}
