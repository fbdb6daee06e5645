"""CLUE classification end to end: `python -m finetune.run --config finetune/configs/clue.py` on small files in
the official formats (tests/test_clue.py's FILES), from a tiny pretraining workdir; the recipe as defaults, the
head's bias as the reference, the best dev params predicting the test files in the CLUE submission layout.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_clue import FILES, FOLDERS, _write

from finetune.clue import data as D
from finetune.clue import tasks as T

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "finetune/configs/clue.py")


def write_clue_dir(root: Path, tasks=None) -> Path:
  """<root>/<official folder>/ with every split of FILES for `tasks` (default all)."""
  for task in tasks or FILES:
    (root / FOLDERS[task]).mkdir(parents=True, exist_ok=True)
    for split, lines in FILES[task].items():
      _write(D.split_path(task, root / FOLDERS[task], split), lines)
  return root


@pytest.fixture(scope="module")
def setup(tiny_pretrained, tmp_path_factory):
  return tiny_pretrained("clue_init"), write_clue_dir(tmp_path_factory.mktemp("clue_files"))


def _run(args, expect=0):
  out = subprocess.run([sys.executable, "-m", "finetune.run", *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=600, env=dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu"))
  assert out.returncode == expect, (out.returncode, out.stdout[-2000:], out.stderr[-3000:])
  return out


def test_config_takes_the_recipe_unless_overridden():
  from finetune.configs import clue
  from roformer_jax.config import ConfigError
  c = clue.get_config("cluewsc")
  assert (c.seq_len, c.batch_size, c.epochs, c.accum_steps) == (128, 32, 30, 1)
  assert (c.optimizer.name, c.optimizer.learning_rate, c.optimizer.b1, c.optimizer.decay) == \
      ("adafactor", 5e-4, 0.9, "constant")
  assert c.head_bias is True
  c = clue.get_config()
  c.clue.task, c.epochs = "tnews", 2
  clue.resolve(c)
  assert (c.seq_len, c.batch_size, c.epochs) == (128, 32, 2)
  c.clue.task = "qqp"
  with pytest.raises(ConfigError, match="config.clue.task: unknown CLUE task 'qqp'"):
    clue.resolve(c)


def test_head_has_a_bias_as_the_reference():
  """keras Dense's default use_bias=True: the CLUE head has a bias also on a RoFormerV2 encoder."""
  import flax.linen as nn
  import jax
  import numpy as np

  from roformer_jax.config import ModelConfig
  from roformer_jax.heads import SequenceClassifier
  cfg = ModelConfig(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, version="v2")
  ids = np.ones((1, 4), np.int32)
  shapes = lambda m: nn.unbox(jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0), ids)["params"]))
  with_bias = shapes(SequenceClassifier(cfg, 3, use_bias=True))
  assert with_bias["classifier"]["bias"].shape == (3,)
  default = shapes(SequenceClassifier(cfg, 3))
  assert "bias" not in default["classifier"]


def _check_outputs(summary, workdir, clue_dir, task):
  assert summary["task"] == "clue" and summary["clue_task"] == task
  assert summary["best_step"] in (1, 2) and 0.0 <= summary["dev_accuracy"] <= 1.0
  labels = T.RECIPES[task]["labels"]
  names = D.test_splits(task, clue_dir / FOLDERS[task])
  for name in names:
    path = workdir / "predictions" / T.SUBMISSIONS[task][name]
    assert summary["predictions"][name] == str(path)
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == [str(x["id"]) for x in FILES[task][name]]
    assert all(list(r) == ["id", "label"] and r["label"] in labels for r in rows)
  assert sorted(os.listdir(workdir / "predictions")) == sorted(T.SUBMISSIONS[task][n] for n in names)
  assert json.loads((workdir / "labels.json").read_text()) == list(labels)


def test_clue_task_through_the_cli(setup, tmp_path):
  """TNEWS (two test files: CLUE 1.1 and 1.0) through `python -m finetune.run`."""
  init, clue_dir = setup
  workdir = tmp_path / "tnews"
  out = _run(["--config", f"{CONFIG}:tnews", "--workdir", str(workdir), "--config.init", str(init),
              "--config.clue.dir", str(clue_dir), "--config.epochs", "2", "--config.batch_size", "2",
              "--config.seq_len", "32", "--config.log_every", "1"])
  _check_outputs(json.loads(out.stdout.strip().splitlines()[-1]), workdir, clue_dir, "tnews")
  assert "classifier/bias (15,)" in out.stdout  # the reference's head: with a bias


def _config(init, clue_dir, task, **overrides):
  from finetune.configs import clue
  c = clue.get_config()
  c.clue.task, c.clue.dir, c.init = task, str(clue_dir), str(init)
  c.update(dict(epochs=2, batch_size=2, seq_len=32, log_every=1), **overrides)
  return c


def test_clue_task_in_process(setup, tmp_path, capsys):
  """OCNLI through `finetune.run.run`: the task folder given directly; the dev line labelled "-" is dropped, as
  the reference, and said in the log."""
  from finetune import run
  init, clue_dir = setup
  summary = run.run(_config(init, clue_dir / FOLDERS["ocnli"], "ocnli"), tmp_path)
  _check_outputs(summary, tmp_path, clue_dir, "ocnli")
  assert summary["dev_examples"] == 1
  assert "label '-' is not one of" in capsys.readouterr().out


def test_bad_clue_inputs(setup, tmp_path):
  from finetune import run
  from roformer_jax.config import ConfigError
  init, clue_dir = setup
  with pytest.raises(ConfigError, match="config.clue.task: unknown CLUE task 'qqp'"):
    run.run(_config(init, clue_dir, "qqp"), tmp_path / "a")
  with pytest.raises(ConfigError, match="config.clue.dir: .*no csl files"):
    run.run(_config(init, tmp_path, "csl"), tmp_path / "b")
  with pytest.raises(ConfigError, match="config.clue.dir=/nowhere: no such folder"):
    run.run(_config(init, "/nowhere", "csl"), tmp_path / "c")
  # Through the CLI: one line naming the file and line, no traceback.
  bad = write_clue_dir(tmp_path / "bad", ["afqmc"])
  (bad / "afqmc_public" / "dev.json").write_text('{"sentence1": "a", "sentence2": "b", "label": "7"}\n')
  out = _run(["--config", f"{CONFIG}:afqmc", "--workdir", str(tmp_path / "w"), "--config.init", str(init),
              "--config.clue.dir", str(bad)], expect=2)
  assert f"{bad / 'afqmc_public' / 'dev.json'}:1: label '7'" in out.stderr
  assert "Traceback" not in out.stderr


# ------------------------------------------------------------------------------------------------
# The suite runner: any subset, one table, one zip, resumable
# ------------------------------------------------------------------------------------------------
SUITE_SET = ["epochs=1", "batch_size=2", "seq_len=32", "log_every=1"]


def test_suite_runs_a_subset_and_skips_finished_tasks(setup, tmp_path):
  import zipfile

  from finetune.clue import suite
  init, clue_dir = setup
  lines = []
  suite.run_suite(str(clue_dir), str(init), tmp_path, ["afqmc"], SUITE_SET, log=lines.append)
  first = (tmp_path / "afqmc" / "summary.json").read_text()
  # A second command with one more task: afqmc is skipped (its summary untouched), csl trains.
  lines.clear()
  rows = suite.run_suite(str(clue_dir), str(init), tmp_path, ["afqmc", "csl"], SUITE_SET, log=lines.append)
  assert any("afqmc: finished before" in x for x in lines) and any("csl: training" in x for x in lines)
  assert (tmp_path / "afqmc" / "summary.json").read_text() == first
  assert list(rows) == ["afqmc", "csl"] and all(0 <= r["dev"] <= 1 and r["metric"] == "accuracy"
                                                 for r in rows.values())
  assert json.loads((tmp_path / "results.json").read_text()) == rows
  md = (tmp_path / "results.md").read_text().splitlines()
  assert md[0].startswith("| task | dev metric | dev |") and md[2].startswith("| afqmc | accuracy |")
  with zipfile.ZipFile(tmp_path / "clue_submission.zip") as z:
    assert sorted(z.namelist()) == ["afqmc_predict.json", "csl_predict.json"]
    assert [json.loads(x)["id"] for x in z.read("csl_predict.json").decode().splitlines()] == ["4"]
  assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
  # A later command for csl alone, in the workdir moved elsewhere: afqmc, finished by an earlier command,
  # stays in the table and the zip, whose files are found under the moved workdir.
  moved = tmp_path.parent / f"{tmp_path.name}_moved"
  tmp_path.rename(moved)
  lines.clear()
  again = suite.run_suite(str(clue_dir), str(init), moved, ["csl"], SUITE_SET, log=lines.append)
  assert again == rows and any("afqmc: finished by an earlier command" in x for x in lines)
  with zipfile.ZipFile(moved / "clue_submission.zip") as z:
    assert sorted(z.namelist()) == ["afqmc_predict.json", "csl_predict.json"]


def test_suite_cli_resumes_an_unfinished_task(setup, tmp_path):
  """A task killed after its last checkpoint but before its summary: the rerun resumes it from the checkpoint
  (no step trained again) and writes its summary; a finished task is skipped."""
  from finetune.clue import suite
  init, clue_dir = setup
  suite.run_suite(str(clue_dir), str(init), tmp_path, ["afqmc", "cluewsc"], SUITE_SET, log=lambda s: None)
  before = json.loads((tmp_path / "cluewsc" / "summary.json").read_text())
  (tmp_path / "cluewsc" / "summary.json").unlink()
  (tmp_path / "clue_submission.zip").unlink()
  args = ["--clue_dir", str(clue_dir), "--init", str(init), "--workdir", str(tmp_path),
          "--tasks", "afqmc,cluewsc"] + [x for kv in SUITE_SET for x in ("--set", kv)]
  out = subprocess.run([sys.executable, "-m", "finetune.clue.suite", *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=600, env=dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu"))
  assert out.returncode == 0, out.stderr[-3000:]
  assert "afqmc: finished before" in out.stdout and "resumed from" in out.stdout
  assert "step 1/" not in out.stdout  # nothing trained again
  after = json.loads((tmp_path / "cluewsc" / "summary.json").read_text())
  assert after["dev_accuracy"] == before["dev_accuracy"] and after["best_step"] == before["best_step"]
  final = json.loads(out.stdout.strip().splitlines()[-1])
  assert set(final) == {"results", "submission", "afqmc", "cluewsc"}
  import zipfile
  with zipfile.ZipFile(final["submission"]) as z:
    assert sorted(z.namelist()) == ["afqmc_predict.json", "cluewsc10_predict.json", "cluewsc11_predict.json"]


def test_suite_preempted_task_is_not_recorded_as_finished(tmp_path):
  """A task stopped by SIGTERM (its run returns a `preempted` summary after saving a checkpoint) stops the suite
  with PREEMPTED and writes no summary.json, so that the rerun resumes it rather than skipping it."""
  from finetune.clue import suite
  from roformer_jax.train.cli import PREEMPTED
  calls = []

  def preempted(cfg, workdir):
    calls.append(cfg.clue.task)
    return {"task": "clue", "step": 3, "preempted": True}

  with pytest.raises(SystemExit) as exit_info:
    suite.run_suite(str(tmp_path), "/init", tmp_path / "w", ["afqmc", "csl"], log=lambda s: None, run=preempted)
  assert exit_info.value.code == PREEMPTED and calls == ["afqmc"]
  assert not (tmp_path / "w" / "afqmc" / "summary.json").exists()
  finished = lambda cfg, workdir: calls.append(cfg.clue.task) or {"dev_accuracy": 0.5, "step": 9, "best_step": 9}
  rows = suite.run_suite(str(tmp_path), "/init", tmp_path / "w", ["afqmc", "csl"], log=lambda s: None, run=finished)
  assert calls == ["afqmc", "afqmc", "csl"] and rows["afqmc"]["dev"] == 0.5


def test_suite_bad_inputs():
  from finetune.clue import suite
  from roformer_jax.config import ConfigError
  with pytest.raises(ConfigError, match="unknown CLUE task"):
    suite.parse_tasks("afqmc,qqp")
  assert suite.parse_tasks("") == list(suite.SUITE)
  cfg = suite.task_config("afqmc", "/d", "/i", ["epochs=3", "optimizer.learning_rate=1e-3"])
  assert cfg.epochs == 3 and cfg.optimizer.learning_rate == 1e-3 and cfg.seq_len == 128
  with pytest.raises(ConfigError, match="config has no key 'epoch'"):
    suite.task_config("afqmc", "/d", "/i", ["epoch=3"])
  with pytest.raises(ConfigError, match="config.epochs is int, got str"):
    suite.task_config("afqmc", "/d", "/i", ["epochs=many"])
