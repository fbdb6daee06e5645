"""Pinyin -> characters (roformer_jax.seq2seq.pinyin, finetune/seq2seq.py): fixed splits, the baseline and the
metrics on hand cases, the gathered TeaForN loss against the full one, and the task end to end through
`finetune.run` from a tiny pretraining workdir, with a SIGKILL while saving, then a rerun, ending as the
straight run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from roformer_jax.seq2seq import pinyin

ROOT = Path(__file__).resolve().parents[1]
KILL = ROOT / "tests" / "multidevice" / "kill_at_save.py"
BATCH, STEPS, DEV, TEST = 8, 4, 16, 24


def ex(text, units):
  return pinyin.Example(text, tuple(units.split()))


# --- data -----------------------------------------------------------------------------------------
def test_cut_and_keep():
  assert pinyin.cut_sentences("他说：“好。”我们走吧！还有") == ["他说：“好。”", "我们走吧！", "还有"]
  assert pinyin.keep("我们走吧！") and not pinyin.keep("走吧！")  # 3 < MIN_CHARS
  assert not pinyin.keep("１９９８年来临了。") and not pinyin.keep("我们走 吧！") and not pinyin.keep("我" * 33)
  assert pinyin.to_units("银行行长说，好。") == ("yin", "hang", "hang", "zhang", "shuo", "，", "hao", "。")


@pytest.fixture(scope="module")
def paragraphs():
  """60 real paragraphs, and one repeated: a sentence seen twice is kept once."""
  from roformer_jax import corpus
  lines = [line for _, line in zip(range(60), corpus.people_daily_lines())]
  return lines + [lines[7]]


def test_splits_deterministic_disjoint_by_paragraph(paragraphs, tmp_path):
  a, b = pinyin.prepare_pinyin(tmp_path / "a", paragraphs), pinyin.prepare_pinyin(tmp_path / "b", paragraphs)
  assert a.name == b.name
  for s in pinyin.SPLITS:
    assert (a / f"{s}.jsonl").read_bytes() == (b / f"{s}.jsonl").read_bytes()
  mtime = (a / "train.jsonl").stat().st_mtime_ns
  assert pinyin.prepare_pinyin(tmp_path / "a", paragraphs) == a and (a / "train.jsonl").stat().st_mtime_ns == mtime
  assert not [p for p in (a.parent).iterdir() if p.name.startswith(".")]  # no temporary folder left

  splits = pinyin.load_pinyin(a)
  meta = json.loads((a / "meta.json").read_text())
  assert {s: len(v) for s, v in splits.items()} == meta["sizes"] and meta["duplicates"] >= 1
  texts = {s: [e.text for e in v] for s, v in splits.items()}
  assert sum(map(len, texts.values())) == len(set().union(*map(set, texts.values())))  # distinct, disjoint
  # Every kept sentence of a paragraph is in that paragraph's split.
  from roformer_jax import splits as split_lib
  parts = split_lib.split_indices(len(paragraphs), pinyin.SPLIT_SEED, pinyin.DEV_FRACTION, pinyin.TEST_FRACTION)
  kept, _ = pinyin.sentences(paragraphs)
  for s, idx in parts.items():
    assert texts[s] == [t for p, t in kept if p in set(idx.tolist())]
  assert all(e.pinyin == pinyin.to_units(e.text) and pinyin.keep(e.text) for v in splits.values() for e in v)


def test_sentences_differing_only_in_punctuation_are_kept_once():
  """Real repeats of People's Daily: a byline with and without its brackets, a quote with and without its close."""
  from roformer_jax import corpus
  wanted = ("图表由北京京求计算机软件公司制作", "旅人！")
  real = [line for line in corpus.people_daily_lines() if any(w in line for w in wanted)]
  kept, stats = pinyin.sentences(real)
  texts = [t for _, t in kept]
  assert texts.count("图表由北京京求计算机软件公司制作") + texts.count("（图表由北京京求计算机软件公司制作）") == 1
  assert texts.count("“旅人！") + texts.count("“旅人！”") == 1 and stats["duplicates"] == 3


def test_bad_split_line_names_file_and_line(tmp_path):
  from roformer_jax.data.jsonl import DataError
  path = tmp_path / "train.jsonl"
  path.write_text('{"text": "我们走吧！", "pinyin": ["wo", "men", "zou", "ba", "！"]}\n'
                  '{"text": "我们走吧！", "pinyin": ["wo", "men"]}\n', encoding="utf-8")
  with pytest.raises(DataError, match=f"{path}:2: 'pinyin' must be one"):
    pinyin.read_split(path)


# --- baseline, codes and metrics -------------------------------------------------------------------
TRAIN = [ex("他是人", "ta shi ren"), ex("她是人", "ta shi ren"), ex("它是事", "ta shi shi"), ex("他事。", "ta shi 。")]


def test_baseline_most_frequent_per_syllable():
  b = pinyin.MostFrequent(TRAIN)
  # ta: 他 2, 她 1, 它 1; shi: 是 3, 事 2; ren: 人 2; a tie would go to the smaller code point.
  assert b.table == {"ta": "他", "shi": "是", "ren": "人", "。": "。"}
  assert b.predict(("ta", "shi", "ren", "！", "xyz")) == "他是人！" + pinyin.UNKNOWN_CHAR
  assert pinyin.MostFrequent([ex("甲乙", "a a")]).table == {"a": "乙"}  # a tie: 乙 U+4E59 before 甲 U+7532
  refs = ["她是人", "它是事", "他是人"]
  preds = [b.predict(("ta", "shi", "ren")), b.predict(("ta", "shi", "shi")), b.predict(("ta", "shi", "ren"))]
  assert preds == ["他是人", "他是是", "他是人"]
  assert pinyin.scores(preds, refs) == {"char_accuracy": 6 / 9, "exact_match": 1 / 3}


def test_metric_definitions_on_length_mismatch():
  # Position-wise over the reference: a short prediction misses the rest, extra characters are not counted.
  assert pinyin.char_accuracy(["ab"], ["abcd"]) == 0.5
  assert pinyin.char_accuracy(["abcdxyz"], ["abcd"]) == 1.0 and pinyin.exact_match(["abcdxyz"], ["abcd"]) == 0.0
  assert pinyin.char_accuracy(["xabc"], ["abcd"]) == 0.0  # an insertion shifts everything after it
  assert pinyin.char_accuracy(["", "ab"], ["ab", "ab"]) == 0.5 and pinyin.exact_match(["", "ab"], ["ab", "ab"]) == 0.5
  assert pinyin.scores([], []) == {"char_accuracy": 0.0, "exact_match": 0.0}
  with pytest.raises(ValueError, match="2 predictions for 1 references"):
    pinyin.char_accuracy(["a", "b"], ["a"])


def test_unit_codes_are_distinct_known_tokens():
  vocab = {"[PAD]": 0, "[UNK]": 1, "他": 2, "是": 3, "人": 4, "。": 5, "x": 6, "##y": 7}
  train = TRAIN + [ex("他", "tuo")]  # tuo's only character, 他, is ta's already: it takes the first free one
  codes = pinyin.unit_codes(train, vocab)
  assert codes == {"shi": 3, "ta": 2, "ren": 4, "。": 5, "tuo": 6}
  with pytest.raises(ValueError, match="no free one-character token for unit 'tuo'"):
    pinyin.unit_codes(train, {k: v for k, v in vocab.items() if k != "x"})


@pytest.mark.parametrize("fill", [False, True])
def test_training_rows_layout(fill):
  """[CLS] codes ([MASK] fill) [SEP] target [SEP]; the loss positions score exactly the target and its [SEP]."""
  from finetune.seq2seq import PinyinArrays, StepBatches
  vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "他", "是", "人", "。", "事"])}
  examples = [ex("他是人。", "ta shi ren 。"), ex("它是事", "ta shi shi")]  # 它 is not in the vocab
  codes = pinyin.unit_codes(examples, vocab)
  data = PinyinArrays(examples, codes, vocab, max_chars=5, fill=fill)
  rows = data.sequences(np.array([0, 1]), seq_len=13)
  ta, shi, ren = codes["ta"], codes["shi"], codes["ren"]
  fill0, fill1 = ([4] if fill else []), ([4, 4] if fill else [])
  want0 = [2, ta, shi, ren, 8, *fill0, 3, 5, 6, 7, 8, 3]
  want1 = [2, ta, shi, shi, *fill1, 3, 1, 6, 9, 3]  # 它 -> [UNK] in the input; never right in the metrics
  for r, want, k in ((0, want0, 4), (1, want1, 3)):
    ids = rows["input_ids"][r]
    assert ids.tolist() == want + [0] * (13 - len(want))
    s = len(want) - k - 1  # source length
    assert rows["token_type_ids"][r].tolist() == [0] * s + [1] * (k + 1) + [0] * (13 - len(want))
    pos = rows["loss_positions"][r][rows["loss_mask"][r] == 1]
    assert ids[pos + 1].tolist() == want[s:]  # the target characters, then [SEP]
  assert data.target[1].tolist() == [-1, 6, 9, -1, -1]
  # Global batches: each epoch a seeded permutation, laid end to end.
  batches = StepBatches(data, batch_size=3, seq_len=13, seed=0)
  drawn = np.concatenate([batches.rows(k) for k in range(4)])  # 12 rows = 6 epochs of 2
  assert all(sorted(drawn[2 * e:2 * e + 2].tolist()) == [0, 1] for e in range(6))
  assert np.array_equal(StepBatches(data, 3, 13, 0).rows(3), batches.rows(3))


# --- the gathered loss ------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3])
def test_teaforn_loss_at_target_positions_equals_the_full_loss(n):
  import jax
  from roformer_jax.config import ModelConfig
  from roformer_jax.model import RoFormerForMaskedLM, init_params
  from roformer_jax.seq2seq import teaforn
  cfg = ModelConfig(vocab_size=50, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
  model = RoFormerForMaskedLM(cfg)
  params = init_params(model, jax.random.PRNGKey(0), 12)
  # Row 0: source 5 tokens, target 4 + [SEP]; row 1: source 3, target 2 + [SEP], then padding.
  ids = np.array([[2, 7, 8, 9, 3, 11, 12, 13, 14, 3, 0, 0], [2, 7, 3, 20, 21, 3, 0, 0, 0, 0, 0, 0]], np.int32)
  types = np.array([[0] * 5 + [1] * 5 + [0] * 2, [0] * 3 + [1] * 3 + [0] * 6], np.int32)
  positions = np.array([[4, 5, 6, 7, 8], [2, 3, 4, 0, 0]], np.int32)
  mask = np.array([[1] * 5, [1, 1, 1, 0, 0]], np.int32)
  full, full_pp = teaforn.teaforn_loss(model, params, ids, types, ids != 0, num_passes=n,
                                       weights=[1.0, 0.5, 0.25][:n])
  at, at_pp = teaforn.teaforn_loss_at(model, params, ids, types, ids != 0, positions, mask, num_passes=n,
                                      weights=[1.0, 0.5, 0.25][:n])
  np.testing.assert_allclose(at_pp, full_pp, rtol=2e-6)
  np.testing.assert_allclose(at, full, rtol=2e-6)
  # The task's target rows (each loss position's successor): passes 2..N reuse the source, same loss.
  rows = np.where(mask > 0, positions + 1, ids.shape[1])
  reuse, reuse_pp = teaforn.teaforn_loss_at(model, params, ids, types, ids != 0, positions, mask, num_passes=n,
                                            weights=[1.0, 0.5, 0.25][:n], target_rows=rows)
  np.testing.assert_allclose(reuse_pp, full_pp, rtol=2e-6)
  np.testing.assert_allclose(reuse, full, rtol=2e-6)


# --- end to end through finetune.run -----------------------------------------------------------------
@pytest.fixture(scope="module")
def init(tiny_pretrained, tmp_path_factory):
  """A tiny pretraining workdir, and the real pinyin splits prepared once for every run here."""
  data = tmp_path_factory.mktemp("pinyin_data")
  pinyin.prepare_pinyin(data)
  return tiny_pretrained("pinyin_init"), data


def _args(init, workdir, *extra):
  return ["--config", str(ROOT / "finetune/configs/pinyin.py"), "--workdir", str(workdir),
          "--config.init", os.path.relpath(init[0], ROOT), "--config.data_dir", str(init[1]),
          "--config.batch_size", str(BATCH), "--config.steps", str(STEPS), "--config.eval_every", "2",
          "--config.checkpoint_every", "2", "--config.eval_examples", str(DEV), "--config.test_examples", str(TEST),
          "--config.log_every", "1", "--config.optimizer.warmup_steps", "1", "--config.optimizer.learning_rate",
          "3e-3", *extra]


def _run(args, script=None, env=None, expect=0):
  cmd = [sys.executable] + ([str(script)] if script else ["-m", "finetune.run"]) + args
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
  workdir = tmp_path_factory.mktemp("pinyin_straight")
  out = _run(_args(init, workdir, "--config.decode.beam_size", "2"))
  return workdir, out, _summary(out)


def test_summary_and_predictions_line_up_with_the_test_split(init, straight):
  workdir, out, summary = straight
  assert summary["task"] == "seq2seq" and summary["n"] == 2 and summary["step"] == STEPS
  for key in ("test_char_accuracy", "test_exact_match", "baseline_char_accuracy", "baseline_exact_match",
              "beam2_test_char_accuracy", "dev_char_accuracy"):
    assert 0.0 <= summary[key] <= 1.0, key
  assert sorted(_losses(workdir)) == list(range(1, STEPS + 1)) and not out.stderr.strip(), out.stderr[-2000:]
  # The in-graph dev count (eval_fn, at the best step) is the strings' count (finish, same params).
  assert summary["dev_char_accuracy"] == pytest.approx(summary["best_eval_char_accuracy"], abs=1e-12)

  test = pinyin.load_pinyin(pinyin.prepare_pinyin(init[1]))["test"][:TEST]
  rows = [json.loads(l) for l in Path(summary["predictions"]).read_text(encoding="utf-8").splitlines()]
  assert [(r["id"], r["reference"], r["pinyin"]) for r in rows] == [(i, e.text, " ".join(e.pinyin))
                                                                    for i, e in enumerate(test)]
  refs = [e.text for e in test]
  assert pinyin.scores([r["greedy"] for r in rows], refs) == {"char_accuracy": summary["test_char_accuracy"],
                                                              "exact_match": summary["test_exact_match"]}
  assert pinyin.char_accuracy([r["beam2"] for r in rows], refs) == summary["beam2_test_char_accuracy"]
  baseline = pinyin.MostFrequent(pinyin.load_pinyin(pinyin.prepare_pinyin(init[1]))["train"])
  assert [r["baseline"] for r in rows] == [baseline.predict(e.pinyin) for e in test]
  assert pinyin.char_accuracy([r["baseline"] for r in rows], refs) == summary["baseline_char_accuracy"]


def test_sigkill_while_saving_then_rerun_ends_as_the_straight_run(init, straight, tmp_path):
  args = _args(init, tmp_path, "--config.decode.beam_size", "2")
  _run(args, script=KILL, expect=-9, env={"KILL_CLI": "finetune.run", "KILL_AT": str(STEPS), "KILL_MODE": "during"})
  out = _run(args)
  assert f"resumed from {tmp_path / 'checkpoints' / '2'}" in out.stdout
  got, want = _summary(out), dict(straight[2])
  for key in ("checkpoint", "best_checkpoint", "tokens_per_s", "mfu", "predictions"):
    got.pop(key), want.pop(key)
  assert got == want
  assert _losses(tmp_path) == _losses(straight[0])  # bitwise, step by step


@pytest.mark.parametrize("key, value, message", [
    ("teaforn.n", 0, "config.teaforn.n = 0"),
    ("teaforn.weights", (1.0,), r"config.teaforn.weights has 1 values for config.teaforn.n = 2"),
    ("seq_len", 16, "config.seq_len = 16: the data needs"),
])
def test_bad_config_is_named(init, tmp_path, key, value, message):
  from finetune import run
  from finetune.configs import pinyin as pinyin_config
  from roformer_jax.config import ConfigError
  cfg = pinyin_config.get_config()
  cfg.update_from_flattened_dict({"init": str(init[0]), "data_dir": str(init[1]), key: value})
  with pytest.raises(ConfigError, match=message):
    run.run(cfg, tmp_path)
