"""NER on the shared train loop, end to end (`python -m finetune.run --config finetune/configs/ner.py`), from a
tiny pretraining workdir built here: People's Daily (the embedded, prepared splits) and a CLUENER2020 folder
written here in the official format from People's Daily sentences.

The F1 is the reference's micro F1 over (start, end, type) in characters, recomputed here from the predictions
file; a model fitted to its sentences reaches it through the char-space decoder; a rerun after a SIGKILL ends as
the straight run; `from_scratch` starts from fresh weights; bad files end in one line naming file and line.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
KILL = ROOT / "tests" / "multidevice" / "kill_at_save.py"
TRAIN, BATCH, EPOCHS = 32, 8, 2
PER_EPOCH = TRAIN // BATCH  # 4
CLUE = {"LOC": "address", "ORG": "organization", "PER": "name"}


@pytest.fixture(scope="module")
def init(text_corpus, tmp_path_factory):
  """A tiny pretraining workdir (2 steps; vocab of the first 200 People's Daily lines) and a data_dir."""
  from pretrain.configs import tiny_cpu
  from pretrain.train import run
  data = text_corpus("ner_init", 200)
  cfg = tiny_cpu.get_config()
  cfg.update(dict(steps=2, batch_size=8, seq_len=32, log_every=1, eval_every=1000, eval_batches=1,
                  checkpoint_every=2))
  cfg.optimizer.warmup_steps = 1
  cfg.data.update(dict(corpus=str(data / "corpus"), vocab=str(data / "vocab.txt"), data_dir=str(data / "cache"),
                       num_workers=1))
  root = tmp_path_factory.mktemp("ner")
  run(cfg, root / "init")
  return root / "init", root / "data"


def _sentences(n: int, max_len: int = 60):
  """The first `n` People's Daily sentences of at most `max_len` characters that have entities."""
  from roformer_jax.extraction import people_daily
  out = []
  with open(people_daily.source_file(), encoding="utf-8") as f:
    for line in f:
      out += [e for e in people_daily.parse_paragraph(line.strip()) if e.entities and len(e.text) <= max_len]
      if len(out) >= n:
        return out[:n]


def _cluener_line(example) -> str:
  label = {}
  for s, e, kind in example.entities:
    label.setdefault(CLUE[kind], {}).setdefault(example.text[s:e + 1], []).append([s, e])
  return json.dumps({"text": example.text, "label": label}, ensure_ascii=False) + "\n"


def _args(init, workdir, *extra):
  return ["--config", str(ROOT / "finetune/configs/ner.py"), "--workdir", str(workdir),
          "--config.init", os.path.relpath(init[0], ROOT), "--config.data_dir", str(init[1]),
          "--config.data.max_train", str(TRAIN), "--config.data.max_dev", "16", "--config.data.max_test", "16",
          "--config.batch_size", str(BATCH), "--config.epochs", str(EPOCHS), "--config.seq_len", "48",
          "--config.log_every", "1", "--config.head_size", "32", *extra]


def _run(args, script=None, env=None, expect=0):
  cmd = [sys.executable] + ([str(script)] if script else ["-m", "finetune.run"]) + args
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", **(env or {})))
  assert out.returncode == expect, (out.returncode, out.stdout[-2000:], out.stderr[-3000:])
  return out


def _losses(workdir):
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r["loss"] for r in rows if "loss" in r}


def _gold(init, split, n):
  """The prepared People's Daily split's first `n` sentences: [(text, {(start, end, type)})]."""
  folder = next((init[1] / "people_daily_ner").iterdir())
  rows = [json.loads(l) for l in (folder / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()[:n]]
  return [(r["text"], {tuple(e) for e in r["entities"]}) for r in rows]


def test_label_rows_are_never_cut_and_padding_is_never_a_label():
  """padded_rows keeps every gold row (a fixed width too small is an error, never a silent cut of training
  labels), and its -1 padding rows give no label in the device's dense [B, types, L, L] labels."""
  import jax.numpy as jnp

  from finetune.ner import dense_labels
  from finetune.pointer_task import padded_rows
  rows = [[(0, 1, 1), (0, 2, 3), (1, 4, 4)], [], [(1, 2, 2)]]
  with pytest.raises(ValueError, match="example 0 has 3 label rows > width=2"):
    padded_rows(rows, 2)
  for width in (None, 3, 5):
    arr = padded_rows(rows, width)
    assert arr.shape == (3, width or 3, 3)
    dense = np.asarray(dense_labels(jnp.asarray(arr), 2, 6))
    assert dense.sum() == 4 and dense[0, 0, 1, 1] == dense[0, 0, 2, 3] == dense[0, 1, 4, 4] == dense[2, 1, 2, 2] == 1
    assert (arr[1] == -1).all() and (arr[2, 1:] == -1).all()


@pytest.fixture(scope="module")
def straight(init, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("straight")
  out = _run(_args(init, workdir))
  return workdir, out, json.loads(out.stdout.strip().splitlines()[-1])


def test_people_daily_outputs(init, straight):
  """Summary keys, one dev evaluation per epoch, the best one's params for the final figures, and test
  P/R/F1 that are the reference's micro scores of the written predictions against the prepared gold."""
  from roformer_jax.extraction import metrics
  workdir, out, summary = straight
  assert summary["task"] == "ner" and summary["step"] == EPOCHS * PER_EPOCH
  assert "new params (initialised): pointer/dense/kernel (128, 3, 2, 32)" in out.stdout
  for key in ("test_f1", "test_precision", "test_recall", "dev_f1", "dev_precision", "dev_recall", "best_eval_f1",
              "eval_f1", "tokens_per_s", "mfu"):
    assert isinstance(summary[key], float), key
  evals = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines() if "eval_f1" in l]
  assert [e["step"] for e in evals] == [PER_EPOCH, 2 * PER_EPOCH]
  best = max(evals, key=lambda e: e["eval_f1"])
  assert summary["best_step"] == best["step"] and summary["dev_f1"] == best["eval_f1"]
  predictions = [json.loads(l) for l in Path(summary["predictions"]).read_text(encoding="utf-8").splitlines()]
  gold = _gold(init, "test", 16)
  assert [p["text"] for p in predictions] == [t for t, _ in gold] and [p["id"] for p in predictions] == list(range(16))
  for p in predictions:
    assert all(0 <= s <= e < len(p["text"]) and kind in ("LOC", "ORG", "PER") for s, e, kind in p["entities"])
  want = metrics.entity_scores([{tuple(e) for e in p["entities"]} for p in predictions], [g for _, g in gold])
  assert (summary["test_f1"], summary["test_precision"], summary["test_recall"]) == (
      want["f1"], want["precision"], want["recall"])
  assert json.loads((workdir / "entity_types.json").read_text()) == ["LOC", "ORG", "PER"]
  assert "MFU" in out.stdout and not out.stderr.strip(), out.stderr[-2000:]


def test_fitted_model_finds_the_entities_in_characters(init, tmp_path):
  """CLUENER files (train = dev = test: 24 sentences) and one test sentence longer than seq_len whose
  entity lies past the truncation: fitted, the model's decoded character spans score high, and the cut-off
  entity counts as missed (gold stays in characters of the whole text)."""
  from roformer_jax.extraction import metrics
  folder = tmp_path / "cluener"
  folder.mkdir()
  sentences = _sentences(24)
  lines = "".join(map(_cluener_line, sentences))
  (folder / "train.json").write_text(lines, encoding="utf-8")
  (folder / "dev.json").write_text(lines, encoding="utf-8")
  long = sentences[0].text * 5 + "江泽民"  # 78 characters > 62 text tokens; its last entity is past the truncation
  cut = json.dumps({"text": long, "label": {"name": {"江泽民": [[len(long) - 3, len(long) - 1]]}}},
                   ensure_ascii=False)
  (folder / "test.json").write_text(lines + cut + "\n", encoding="utf-8")
  out = _run(_args(init, tmp_path / "run", "--config.data.source", "cluener", "--config.data.dir", str(folder),
                   "--config.epochs", "15", "--config.seq_len", "64", "--config.head_size", "64",
                   "--config.optimizer.learning_rate", "3e-3", "--config.log_every", "10",
                   "--config.data.max_dev", "0", "--config.data.max_test", "0"))
  summary = json.loads(out.stdout.strip().splitlines()[-1])
  assert "test 25 (1 entities off token boundaries)" in out.stdout
  predictions = [json.loads(l) for l in Path(summary["predictions"]).read_text(encoding="utf-8").splitlines()]
  gold = [{(s, e, CLUE[k]) for s, e, k in x.entities} for x in sentences] + [{(len(long) - 3, len(long) - 1, "name")}]
  predicted = [{tuple(e) for e in p["entities"]} for p in predictions]
  want = metrics.entity_scores(predicted, gold)
  assert summary["test_f1"] == want["f1"] and summary["test_recall"] == want["recall"]
  assert summary["dev_f1"] > 0.8, summary
  assert (len(long) - 3, len(long) - 1, "name") not in predicted[-1]
  assert summary["test_recall"] <= 1 - 1 / sum(map(len, gold)) + 1e-9


@pytest.mark.parametrize("what, at", [("best", PER_EPOCH), ("checkpoint", 2 * PER_EPOCH)])
def test_sigkill_while_saving_then_rerun_ends_as_the_straight_run(init, straight, tmp_path, what, at):
  """SIGKILL right after the first best save (step 4) or the last run checkpoint (step 8) started: the rerun
  gives the straight run's losses, bitwise, and its final results."""
  _run(_args(init, tmp_path), script=KILL, expect=-9,
       env={"KILL_CLI": "finetune.run", "KILL_WHAT": what, "KILL_AT": str(at), "KILL_MODE": "during"})
  out = _run(_args(init, tmp_path))
  assert ("initialised a new run" if what == "best" else f"resumed from {tmp_path / 'checkpoints' / str(PER_EPOCH)}") \
      in out.stdout
  summary = json.loads(out.stdout.strip().splitlines()[-1])
  want = dict(straight[2])
  for key in ("checkpoint", "best_checkpoint", "predictions", "tokens_per_s", "mfu"):
    summary.pop(key), want.pop(key)
  assert summary == want
  assert _losses(tmp_path) == _losses(straight[0])
  assert Path(straight[2]["predictions"]).read_text() == (tmp_path / "predictions" / "test.jsonl").read_text()


def test_eight_devices_log_the_same_losses(init, straight, tmp_path):
  """Data x tensor (the 3 types do not divide the tensor axis: that dim stays whole): the first 4 losses and
  the dev loss at step 4 as the 1-device run's, to float32 agreement."""
  out = _run(_args(init, tmp_path, "--config.mesh.data", "2", "--config.mesh.fsdp", "1", "--config.mesh.tensor", "4",
                   "--config.steps", "4", "--config.data.max_test", "1"),
             env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
  assert "'data': 2, 'fsdp': 1, 'tensor': 4" in out.stdout and "over 8 devices" in out.stdout
  want, got = _losses(straight[0]), _losses(tmp_path)
  assert sorted(got) == [1, 2, 3, 4]
  np.testing.assert_allclose([got[s] for s in range(1, 5)], [want[s] for s in range(1, 5)], rtol=2e-5)
  evals = [json.loads(l) for d in (straight[0], tmp_path) for l in (d / "metrics.jsonl").read_text().splitlines()
           if '"eval_loss"' in l and json.loads(l)["step"] == PER_EPOCH]
  np.testing.assert_allclose(evals[1]["eval_loss"], evals[0]["eval_loss"], rtol=2e-5)


def _task(init, tmp_path, **changes):
  from finetune.configs import ner
  from finetune.ner import NerTask
  cfg = ner.get_config()
  cfg.update(dict(init=str(init[0]), data_dir=str(init[1]), seq_len=32, head_size=32, **changes))
  cfg.data.update(dict(max_train=8, max_dev=8, max_test=8))
  task = NerTask(cfg)
  logs = []
  task.prepare(tmp_path, logs.append)
  return task, logs


@pytest.mark.parametrize("head", ["gp", "egp"])
def test_from_scratch_starts_from_fresh_weights(init, tmp_path, head):
  """initial_params: the checkpoint's encoder, or with from_scratch the fresh random one (same shapes: the
  checkpoint's architecture), never the checkpoint's tensors."""
  import flax.linen as nn
  import jax
  import optax
  import orbax.checkpoint as ocp

  from roformer_jax.train import sharding, step as step_lib
  saved = ocp.StandardCheckpointer().restore(init[0] / "checkpoints" / "2" / "state")["params"]["roformer"]
  for scratch in (False, True):
    task, logs = _task(init, tmp_path, from_scratch=scratch, head=head)
    mesh = sharding.make_mesh(1, 1, 1)
    _, shardings = step_lib.abstract_state(task.init_params, optax.sgd(0.1), mesh)
    fresh = jax.jit(lambda r: nn.meta.unbox(task.init_params(r)), out_shardings=shardings.params)(
        jax.random.PRNGKey(0))
    params = task.initial_params(fresh)
    got = jax.tree_util.tree_leaves_with_path(params["roformer"])
    want = jax.tree_util.tree_leaves_with_path(saved)
    assert [p for p, _ in got] == [p for p, _ in want]
    same = [np.array_equal(np.asarray(a), np.asarray(b)) for (_, a), (_, b) in zip(got, want)]
    # Norm scales start at 1 in both (a 2-step checkpoint keeps RoFormerV2's scale-free norms): only tensors
    # the init draws at random can tell the two apart, and every one of them must.
    random = [np.asarray(a).std() > 0 for _, a in jax.tree_util.tree_leaves_with_path(fresh["roformer"])]
    assert sum(random) >= 10
    if scratch:
      assert not any(s for s, r in zip(same, random) if r)
      assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
                 zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(fresh)))
      assert logs[-1].startswith("from scratch: every param freshly initialised")
    else:
      assert all(same)
    assert sorted(params) == ["pointer", "roformer"]


def test_bad_cluener_files_end_in_one_line_naming_file_and_line(init, tmp_path):
  """An unknown entity type and a span outside its text: DataError "file:line: ..." (the CLI: one line, exit
  2); with data.strict=False the span is dropped and the run goes on."""
  from roformer_jax.data.jsonl import DataError
  folder = tmp_path / "cluener"
  folder.mkdir()
  good = "".join(map(_cluener_line, _sentences(4)))
  (folder / "train.json").write_text(good, encoding="utf-8")
  (folder / "dev.json").write_text(good + json.dumps({"text": "在北京", "label": {"city": {"北京": [[1, 2]]}}},
                                                     ensure_ascii=False) + "\n", encoding="utf-8")
  source = ["--config.data.source", "cluener", "--config.data.dir", str(folder)]
  out = _run(_args(init, tmp_path / "a", *source), expect=2)
  assert out.stderr.strip().splitlines() == [
      f"finetune: error: {folder / 'dev.json'}:5: unknown entity type 'city' (known: address, book, company, game, "
      "government, movie, name, organization, position, scene)"], out.stderr[-2000:]
  (folder / "dev.json").write_text(good + json.dumps({"text": "在北京", "label": {"address": {"北京": [[1, 3]]}}},
                                                     ensure_ascii=False) + "\n", encoding="utf-8")
  with pytest.raises(DataError, match=rf"^{folder / 'dev.json'}:5: span \[1, 3\] is outside the text \(length 3\)"):
    _task(init, tmp_path, **{"data": {"source": "cluener", "dir": str(folder), "strict": True}})
  task, logs = _task(init, tmp_path, **{"data": {"source": "cluener", "dir": str(folder), "strict": False}})
  assert len(task.splits["dev"]) == 5 and task.splits["dev"].gold[-1] == ()
  assert logs[0] == (f"1 entities dropped from the files, the first: {folder / 'dev.json'}:5: span [1, 3] is outside "
                     "the text (length 3)")
  from roformer_jax.config import ConfigError
  with pytest.raises(ConfigError, match="config.data.dir is empty"):
    _task(init, tmp_path, **{"data": {"source": "cmeee", "dir": ""}})
  with pytest.raises(ConfigError, match="config.head: unknown head 'crf'"):
    _task(init, tmp_path, head="crf")


def test_cmeee_folder_through_the_task(init, tmp_path):
  """The official CMeEE layout (one JSON list per split, start_idx/end_idx inclusive, nested entities): the
  task's splits hold the gold in characters and the aligned spans as training labels (type, i, j tokens)."""
  folder = tmp_path / "CMeEE"
  folder.mkdir()
  rows = [{"text": "患者出现发热咳嗽。", "entities": [
      {"start_idx": 4, "end_idx": 5, "type": "sym", "entity": "发热"},
      {"start_idx": 6, "end_idx": 7, "type": "sym", "entity": "咳嗽"},
      {"start_idx": 4, "end_idx": 7, "type": "dis", "entity": "发热咳嗽"}]}]
  for split in ("train", "dev"):
    (folder / f"CMeEE_{split}.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
  task, _ = _task(init, tmp_path, **{"data": {"source": "cmeee", "dir": str(folder)}})
  train = task.splits["train"]
  assert task.types[2] == "dis" and task.types[8] == "sym" and "test" not in task.splits
  assert train.gold == [((4, 5, "sym"), (6, 7, "sym"), (4, 7, "dis"))]
  # [CLS] shifts every character by one token (one character per token here).
  assert train.arrays["spans"].tolist() == [[[2, 5, 8], [8, 5, 6], [8, 7, 8]]]


def test_compare_driver_prints_one_json_line(init, tmp_path):
  """`python -m finetune.ner_compare` (make finetune-ner): the run from the checkpoint, the same from scratch,
  and a last line with the keys the issue names."""
  args = _args(init, tmp_path, "--config.steps", "2", "--config.data.max_test", "4")
  out = subprocess.run([sys.executable, "-m", "finetune.ner_compare", *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=600, env=dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu"))
  assert out.returncode == 0, out.stderr[-3000:]
  summary = json.loads(out.stdout.strip().splitlines()[-1])
  assert summary["task"] == "ner" and summary["step"] == summary["scratch_step"] == 2
  for key in ("test_f1", "test_precision", "test_recall", "scratch_test_f1"):
    assert isinstance(summary[key], float), key
  assert out.stdout.count("from scratch: every param freshly initialised") == 1
  assert out.stdout.count("encoder from ") == 1
  assert sorted(p.name for p in tmp_path.iterdir()) == ["pretrained", "scratch"]
