"""PET on the train loop, end to end on the real reviews: `python -m finetune.run --config finetune/configs/pet.py`
in each regime and `python -m finetune.pet_compare` (`make finetune`), from a tiny pretraining workdir.

Zero-shot accuracy equals the checkpoint's MLM scored by hand; few-shot trains K labelled rows per epoch and a
SIGKILL while saving, then a rerun, ends as the uninterrupted run; the unsupervised and semi-supervised regimes
train on what they should; the [CLS] baseline gets exactly PET's labels; bad config values end in one line.
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
K, BATCH, EPOCHS, SEQ = 16, 8, 2, 32
PER_EPOCH = K // BATCH  # 2


@pytest.fixture(scope="module")
def init(tiny_pretrained, tmp_path_factory):
  """A tiny pretraining workdir and a data folder with the reviews prepared once for every run here."""
  from roformer_jax.pet import reviews
  data = tmp_path_factory.mktemp("pet_data")
  reviews.prepare_reviews(data)
  return tiny_pretrained("pet_init"), data


def _args(init, workdir, *extra, config="pet.py"):
  return ["--config", str(ROOT / "finetune/configs" / config), "--workdir", str(workdir),
          "--config.init", os.path.relpath(init[0], ROOT), "--config.data_dir", str(init[1]),
          "--config.k", str(K), "--config.batch_size", str(BATCH), "--config.epochs", str(EPOCHS),
          "--config.seq_len", str(SEQ), "--config.log_every", "1", "--config.optimizer.learning_rate", "1e-3", *extra]


def _run(args, module="finetune.run", script=None, env=None, expect=0):
  cmd = [sys.executable] + ([str(script)] if script else ["-m", module]) + args
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", **(env or {})))
  assert out.returncode == expect, (out.returncode, out.stdout[-2000:], out.stderr[-3000:])
  return out


def _summary(out):
  return json.loads(out.stdout.strip().splitlines()[-1])


def _losses(workdir):
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.fixture(scope="module")
def straight(init, tmp_path_factory):
  """The few-shot run, in <root>/pet: where `finetune.pet_compare --workdir <root>` puts its PET run."""
  workdir = tmp_path_factory.mktemp("pet_straight") / "pet"
  out = _run(_args(init, workdir))
  return workdir, out, _summary(out)


def test_zero_shot_is_the_checkpoint_scored_by_hand(init, tmp_path):
  """P1 (`＿满意。{text}`), no training: the test accuracy is that of the MLM's 很 vs 不 at the blank, computed
  here from full-sequence logits of rows built by hand (text truncated, the pattern kept)."""
  import roformer_jax as rj
  from roformer_jax.pet import reviews
  summary = _summary(_run(_args(init, tmp_path, "--config.regime", "zero_shot")))
  assert summary["task"] == "pet" and summary["step"] == 0 and summary["regime"] == "zero_shot"
  assert not (tmp_path / "checkpoints").exists()

  model, params = rj.from_pretrained(init[0], with_mlm=True)
  tok = rj.load_tokenizer(init[0] / "vocab.txt")
  test = reviews.load_reviews(reviews.prepare_reviews(init[1]))["test"]
  vocab = {t: i for i, t in enumerate((init[0] / "vocab.txt").read_text(encoding="utf-8").splitlines())}
  prefix = [tok.cls_id, vocab["[MASK]"], vocab["满"], vocab["意"], vocab["。"]]
  rows = np.zeros((len(test), SEQ), np.int32)
  for i, text in enumerate(test.texts):
    ids = prefix + tok.encode(text).ids[1:-1][:SEQ - len(prefix) - 1] + [tok.sep_id]
    rows[i, :len(ids)] = ids
  logits = np.concatenate([np.asarray(model.apply({"params": params}, rows[s:s + 256], None, (rows[s:s + 256] > 0)))
                           for s in range(0, len(rows), 256)])[:, 1]
  logp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
  margin = logp[:, vocab["很"]] - logp[:, vocab["不"]]  # pos minus neg; a tie goes to the first label, neg
  want = np.mean((margin > 0) == (test.labels == 1))
  near = np.sum(np.abs(margin) < 1e-4)  # batch shapes may flip a near-tie, nothing else
  assert abs(summary["test_accuracy"] - want) <= near / len(test), (summary["test_accuracy"], want, near)


def test_few_shot_trains_k_examples_and_keeps_the_best(init, straight):
  workdir, out, summary = straight
  assert summary["regime"] == "few_shot" and summary["k"] == K and summary["step"] == EPOCHS * PER_EPOCH
  assert f"{K} labelled + 0 unlabelled" in out.stdout and "tok/s" in out.stdout
  assert sorted(_losses(workdir)) == list(range(1, EPOCHS * PER_EPOCH + 1))
  evals = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines() if "eval_accuracy" in l]
  assert [e["step"] for e in evals] == [PER_EPOCH, 2 * PER_EPOCH]
  best = max(evals, key=lambda e: e["eval_accuracy"])
  assert summary["best_step"] == best["step"] and summary["dev_accuracy"] == best["eval_accuracy"]
  assert 0.0 < summary["test_accuracy"] < 1.0 and not out.stderr.strip(), out.stderr[-2000:]


def test_sigkill_while_saving_then_rerun_ends_as_the_straight_run(init, straight, tmp_path):
  _run(_args(init, tmp_path), script=KILL, expect=-9,
       env={"KILL_CLI": "finetune.run", "KILL_AT": str(EPOCHS * PER_EPOCH), "KILL_MODE": "during"})
  out = _run(_args(init, tmp_path))
  assert f"resumed from {tmp_path / 'checkpoints' / str(PER_EPOCH)}" in out.stdout
  got, want = _summary(out), dict(straight[2])
  for key in ("checkpoint", "best_checkpoint", "tokens_per_s", "mfu"):
    got.pop(key), want.pop(key)
  assert got == want
  assert _losses(tmp_path) == _losses(straight[0])  # bitwise, step by step


@pytest.mark.parametrize("regime, labelled", [("unsupervised", 0), ("semi_supervised", K)])
def test_regimes_with_unlabelled_texts(init, tmp_path, regime, labelled):
  """Both train on the 13,856 train texts (less the K labelled for semi-supervised), no pattern on them."""
  out = _run(_args(init, tmp_path, "--config.regime", regime, "--config.steps", "2"))
  summary = _summary(out)
  assert summary["regime"] == regime and summary["k"] == labelled and summary["step"] == 2
  assert f"{labelled} labelled + {13856 - labelled} unlabelled" in out.stdout


def test_compare_gives_the_baseline_the_same_labels(init, straight, tmp_path):
  """`make finetune`'s driver over the finished `straight` run: PET's part resumes at its last step (its summary
  as before), then the [CLS] classifier trains on PET's K labels."""
  from roformer_jax.pet import batches, reviews
  tmp_path = straight[0].parent
  out = _run(_args(init, tmp_path), module="finetune.pet_compare")
  summary = _summary(out)
  want = dict(straight[2])
  for key in ("task", "regime", "k", "dev_accuracy", "test_accuracy", "best_step"):
    assert summary[key] == want[key], key
  assert 0.0 < summary["baseline_test_accuracy"] < 1.0 and summary["baseline_best_step"] in (PER_EPOCH, 2 * PER_EPOCH)
  train = reviews.load_reviews(reviews.prepare_reviews(init[1]))["train"]
  labelled, _ = batches.regime_data("few_shot", train, K, 0)
  rows = [json.loads(l) for l in (tmp_path / "labels" / "train.jsonl").read_text(encoding="utf-8").splitlines()]
  assert [(r["text"], r["label"]) for r in rows] == [(t, reviews.LABELS[y]) for t, y in zip(labelled.texts,
                                                                                           labelled.labels)]
  cls = Path(summary["baseline_workdir"])
  assert json.loads((cls / "labels.json").read_text()) == ["neg", "pos"]
  assert sorted(_losses(cls)) == list(range(1, EPOCHS * PER_EPOCH + 1))  # same epochs and batch as PET


@pytest.mark.parametrize("key, value, message", [
    ("pattern", "满意。{text}", "config.pattern"),
    ("verbalizer.pos", "ℵ", r"config\.verbalizer\['pos'\] = 'ℵ' is not in the vocabulary"),
    ("regime", "zero_shot", "config.regime"),
    ("pattern", "P9", r"config\.pattern = 'P9': not a pattern name \(P1, P2, P3, P4, P5\)"),
    ("k", 10**6, r"config\.k = 1000000: more than the \d+ examples of the training split"),
    ("kshot_mode", "foo", r"config\.kshot_mode = 'foo'; expected 'stratified' or 'balanced'"),
])
def test_bad_config_is_named(init, tmp_path, key, value, message):
  """The errors the CLIs print as one line (tests/test_finetune.py checks that path) name the config key."""
  from finetune import pet_compare
  from finetune.configs import pet
  from roformer_jax.config import ConfigError
  cfg = pet.get_config()
  cfg.update_from_flattened_dict({"init": str(init[0]), "data_dir": str(init[1]), "seq_len": SEQ, key: value})
  with pytest.raises(ConfigError, match=message):
    pet_compare.run(cfg, tmp_path)  # PET's task prepares first; the driver checks the regime before it


def test_pet_compare_refuses_another_task(tmp_path):
  from finetune import pet_compare
  from finetune.configs import classify
  from roformer_jax.config import ConfigError
  with pytest.raises(ConfigError, match=r"^config\.task is 'classify'; finetune\.pet_compare runs the pet task"):
    pet_compare.run(classify.get_config(), tmp_path)
  assert not list(tmp_path.iterdir())


def test_pet_compare_passes_on_a_preempted_baseline(tmp_path, monkeypatch):
  """The [CLS] baseline stopped by SIGTERM (a `preempted` summary, no accuracies): the driver returns that summary
  (the CLI then exits PREEMPTED for the rerun that resumes it) instead of failing on the missing accuracies."""
  from finetune import pet_compare
  from finetune.configs import pet
  runs = []

  def fake_run(cfg, workdir):
    runs.append(cfg.task)
    if cfg.task == "pet":
      return {"task": "pet", "dev_accuracy": 0.6, "test_accuracy": 0.6}
    return {"task": "classify", "step": 2, "preempted": True}

  monkeypatch.setattr(pet_compare.finetune_run, "run", fake_run)
  monkeypatch.setattr(pet_compare, "write_labels", lambda cfg, folder: {s: str(folder / s) for s in
                                                                        ("train", "dev", "test")})
  summary = pet_compare.run(pet.get_config(), tmp_path)
  assert runs == ["pet", "classify"] and summary.get("preempted") is True
