"""GPLinker relation and event extraction on the shared train loop (finetune/gplinker.py), from a tiny pretraining
workdir built here: the synthetic People's Daily rules on hand examples, the sparse labels against the reference's
arrays, DuIE / DuEE folders in the official formats through the task (summary keys, the predictions file), and
the decoding caps on an untrained model.
"""

import json
import time

import numpy as np
import pytest

from roformer_jax.extraction.decode import TRIGGER
from roformer_jax.extraction.readers import NerExample


# ------------------------------------------------------------------------------------------------
# The synthetic rules
# ------------------------------------------------------------------------------------------------
def test_relation_rules_on_hand_examples():
  from roformer_jax.extraction import synthetic
  text = "江泽民在北京会见了克林顿，新华社上海电。"
  ex = NerExample(text, ((0, 2, "PER"), (4, 5, "LOC"), (9, 11, "PER"), (13, 15, "ORG"), (16, 17, "LOC")))
  # 江泽民 -> the first LOC to its right (北京, not 上海); 克林顿 has LOC 上海 7 chars on: also a triple.
  assert synthetic.relation_triples(ex) == [("克林顿", "person_place", "上海"), ("新华社", "org_place", "上海"),
                                            ("江泽民", "person_place", "北京")]
  far = NerExample("李鹏" + "，" * 21 + "北京", ((0, 1, "PER"), (23, 24, "LOC")))  # 21 characters between
  assert synthetic.relation_triples(far) == []
  assert synthetic.relation_triples(NerExample("李鹏" + "，" * 20 + "北京", ((0, 1, "PER"), (22, 23, "LOC")))) == [
      ("李鹏", "person_place", "北京")]
  # A repeated name: DuIE's first-occurrence lookup would not find the rule's mention.
  assert synthetic.first_occurrences(ex)
  assert not synthetic.first_occurrences(NerExample("北京人在北京", ((4, 5, "LOC"),)))
  rows, left_out = synthetic.relation_rows([ex, NerExample("北京人在北京", ((4, 5, "LOC"),))])
  assert left_out == 1 and [r["text"] for r in rows] == [text]
  assert rows[0]["spo_list"][0] == {"subject": "克林顿", "predicate": "person_place", "object": "上海",
                                    "subject_type": "人物", "object_type": "地点"}


def test_event_rules_on_hand_examples():
  from roformer_jax.extraction import synthetic
  text = "江泽民在北京会见了克林顿，并出席宴会。外交部访问团"
  ex = NerExample(text, ((0, 2, "PER"), (4, 5, "LOC"), (9, 11, "PER"), (19, 24, "ORG")))
  # 会见: agent the nearest PER/ORG before (江泽民; 北京 is a LOC), object the nearest entity after (克林顿).
  # 出席: agent 克林顿, object the ORG 外交部访问团 (5 characters on); 访问 inside that ORG is no trigger.
  assert synthetic.trigger_spans(ex) == [(6, "会见"), (14, "出席")]
  assert synthetic.sentence_events(ex) == [
      (("会见", TRIGGER, "会见", 6), ("会见", "主体", "江泽民", 0), ("会见", "客体", "克林顿", 9)),
      (("出席", TRIGGER, "出席", 14), ("出席", "主体", "克林顿", 9), ("出席", "客体", "外交部访问团", 19))]
  alone = NerExample("今天举行。", ())
  assert synthetic.sentence_events(alone) == [(("举行", TRIGGER, "举行", 2),)]
  negatives = [NerExample(f"北京{i}", ((0, 1, "LOC"),)) for i in range(synthetic.NEGATIVE_EVERY + 1)]
  rows = synthetic.event_rows([ex, NerExample("无实体", ())] + negatives, "train")
  # the trigger sentence, then the 1st and (1 + NEGATIVE_EVERY)-th negative; a sentence without entities never
  assert [r["text"] for r in rows] == [text, "北京0", f"北京{synthetic.NEGATIVE_EVERY}"]
  assert rows[0]["event_list"][1] == {"event_type": "出席", "trigger": "出席", "trigger_start_index": 14,
                                      "class": "出席", "arguments": [
                                          {"role": "主体", "argument": "克林顿", "argument_start_index": 9, "alias": []},
                                          {"role": "客体", "argument": "外交部访问团", "argument_start_index": 19,
                                           "alias": []}]}


def test_prediction_rows_drop_covered_events_as_the_reference():
  """predict_to_file's isin: an event whose (role, argument) pairs, trigger aside, are among those of another
  event of its type is left out, whatever its trigger; a trigger-only event is covered by any; no trigger, no row."""
  from finetune.gplinker import EventTask
  task = EventTask.__new__(EventTask)  # prediction_row reads no config
  predicted = [(("会见", TRIGGER, "会见", 5), ("会见", "主体", "张三", 0)),
               (("会见", "主体", "王五", 9), ("会见", TRIGGER, "会晤", 20), ("会见", "客体", "李四", 23),
                ("会见", "主体", "张三", 0)),
               (("会见", TRIGGER, "接见", 30),),
               (("出席", TRIGGER, "出席", 40),),
               (("出席", "主体", "张三", 0),)]
  rows = task.prediction_row(0, "", predicted)["event_list"]
  assert [(r["event_type"], r["trigger"], [a["argument"] for a in r["arguments"]]) for r in rows] == [
      ("会见", "会晤", ["张三", "王五", "李四"]), ("出席", "出席", [])]


# ------------------------------------------------------------------------------------------------
# Labels
# ------------------------------------------------------------------------------------------------
def test_device_pairs_give_the_reference_loss():
  """Rows [B, E, 3] expanded on the device give losses.gplinker_crossentropy of the reference's per-head padded
  [B, heads, P, 2] arrays (spans.pair_labels), per example."""
  import jax.numpy as jnp

  from finetune.gplinker import pair_labels
  from finetune.pointer_task import padded_rows, set_rows
  from roformer_jax import losses
  from roformer_jax.extraction import spans
  sets = [[{(1, 2), (3, 3)}, set(), {(2, 5)}], [set(), set(), set()], [{(4, 4)}, {(1, 1), (2, 3), (5, 6)}, set()]]
  scores = np.random.default_rng(0).normal(size=(3, 3, 8, 8)).astype(np.float32)
  rows = padded_rows([set_rows(s) for s in sets])
  got = losses.sparse_global_pointer_rows(pair_labels(jnp.asarray(rows), 3), jnp.asarray(scores))
  want = [losses.sparse_global_pointer_crossentropy(spans.pair_labels([s]), scores[b:b + 1])
          for b, s in enumerate(sets)]
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6)
  assert float(got[1]) > 0  # no positive: still the negatives' term


# ------------------------------------------------------------------------------------------------
# Official-format folders through the task
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def init(tiny_pretrained, tmp_path_factory):
  """(a tiny pretraining workdir, a data_dir shared by the module: People's Daily is prepared once)."""
  return tiny_pretrained("gplinker_init"), tmp_path_factory.mktemp("gplinker_data")


def _jsonl(path, rows):
  path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
  return path


def _sentences(n, events=False):
  """The first `n` People's Daily sentences (<= 60 characters) with a triple (or an event) by the synthetic
  rules."""
  from roformer_jax.extraction import people_daily, synthetic
  keep = (synthetic.sentence_events if events else
          lambda e: synthetic.first_occurrences(e) and synthetic.relation_triples(e))
  out = []
  with open(people_daily.source_file(), encoding="utf-8") as f:
    for line in f:
      out += [e for e in people_daily.parse_paragraph(line.strip()) if len(e.text) <= 60 and keep(e)]
      if len(out) >= n:
        return out[:n]


def _cfg(kind, init, tmp_path, **changes):
  from finetune.configs import event, relation
  cfg = (relation if kind == "relation" else event).get_config()
  cfg.update(dict(init=str(init[0]), data_dir=str(init[1]), seq_len=64, head_size=16, batch_size=8,
                  epochs=2, log_every=100))
  cfg.update(changes)
  return cfg


def _duie_folder(folder, n):
  from roformer_jax.extraction import synthetic
  folder.mkdir()
  _jsonl(folder / "all_50_schemas", synthetic.schema("relation"))
  rows, _ = synthetic.relation_rows(_sentences(n))
  for name in ("train_data.json", "dev_data.json", "test_data.json"):
    _jsonl(folder / name, rows)
  return rows


def test_duie_folder_trains_end_to_end(init, tmp_path):
  """DuIE files (train = dev = test: 16 sentences): the summary's keys, test P/R/F1 that are the triple scores of
  the written predictions, and a model fitted to its sentences that finds most triples."""
  from finetune.run import run
  from roformer_jax.extraction import metrics
  rows = _duie_folder(tmp_path / "duie", 16)
  cfg = _cfg("relation", init, tmp_path, epochs=25)
  cfg.data.update(dict(source="duie", dir=str(tmp_path / "duie")))
  cfg.optimizer.learning_rate = 3e-3
  summary = run(cfg, tmp_path / "run")
  for key in ("dev_f1", "dev_precision", "dev_recall", "test_f1", "test_precision", "test_recall", "best_eval_f1"):
    assert isinstance(summary[key], float), key
  assert summary["task"] == "relation" and summary["step"] == 50
  predicted = [json.loads(l) for l in open(summary["predictions"], encoding="utf-8")]
  assert [p["text"] for p in predicted] == [r["text"] for r in rows] and [p["id"] for p in predicted] == list(range(16))
  got = [[(t["subject"], t["predicate"], t["object"]) for t in p["spo_list"]] for p in predicted]
  gold = [[(t["subject"], t["predicate"], t["object"]) for t in r["spo_list"]] for r in rows]
  want = metrics.triple_scores(got, gold)
  assert (summary["test_f1"], summary["test_precision"], summary["test_recall"]) == (
      want["f1"], want["precision"], want["recall"])
  assert summary["test_f1"] > 0.6, summary
  assert json.loads((tmp_path / "run" / "relation_labels.json").read_text()) == ["person_place", "org_place"]


def test_duee_folder_through_the_task(init, tmp_path):
  """DuEE files in the official format: event- and argument-level keys, predictions in DuEE's submission form
  (the file's ids) whose triggers and arguments are spans of their texts."""
  from finetune.run import run
  from roformer_jax.extraction import synthetic
  folder = tmp_path / "duee"
  folder.mkdir()
  _jsonl(folder / "duee_event_schema.json", synthetic.schema("event"))
  rows = synthetic.event_rows(_sentences(8, events=True), "x")
  rows.append({"text": "只有文本，没有事件。", "id": "neg", "event_list": []})
  for name in ("duee_train.json", "duee_dev.json", "duee_test2.json"):
    _jsonl(folder / name, rows)
  cfg = _cfg("event", init, tmp_path)
  cfg.data.update(dict(source="duee", dir=str(folder)))
  summary = run(cfg, tmp_path / "run")
  assert summary["task"] == "event" and summary["step"] == 4
  for split in ("dev", "test"):
    for key in ("event_f1", "event_precision", "event_recall", "argument_f1", "argument_precision",
                "argument_recall"):
      assert isinstance(summary[f"{split}_{key}"], float), (split, key)
  assert isinstance(summary["dev_loss"], float) and isinstance(summary["best_eval_event_f1"], float)
  predicted = [json.loads(l) for l in open(summary["predictions"], encoding="utf-8")]
  assert [p["text"] for p in predicted] == [r["text"] for r in rows]
  assert [p["id"] for p in predicted] == [r["id"] for r in rows]  # the test file's ids, as the submission needs
  for p in predicted:
    for e in p["event_list"]:
      assert e["event_type"] in synthetic.EVENT_TYPES
      assert p["text"][e["trigger_start_index"]:].startswith(e["trigger"])
      for a in e["arguments"]:
        assert a["role"] in ("主体", "客体") and p["text"][a["argument_start_index"]:].startswith(a["argument"])


def test_bad_files_and_config_name_the_place(init, tmp_path):
  from roformer_jax.config import ConfigError
  from roformer_jax.data.jsonl import DataError
  from finetune.gplinker import EventTask, RelationTask
  rows = _duie_folder(tmp_path / "duie", 2)
  bad = dict(rows[0], spo_list=[dict(rows[0]["spo_list"][0], predicate="出生地")])
  _jsonl(tmp_path / "duie" / "dev_data.json", rows + [bad])
  cfg = _cfg("relation", init, tmp_path)
  cfg.data.update(dict(source="duie", dir=str(tmp_path / "duie")))
  with pytest.raises(DataError, match=rf"^{tmp_path / 'duie' / 'dev_data.json'}:3: spo_list\[0\]: unknown predicate"):
    RelationTask(cfg).prepare(tmp_path, print)
  cfg.decode.max_entities = 0
  with pytest.raises(ConfigError, match="config.decode.max_entities must be >= 1"):
    RelationTask(cfg)
  with pytest.raises(ConfigError, match="config.data.source: unknown source 'duie'; expected people_daily or duee"):
    EventTask(_cfg("event", init, tmp_path, data=dict(source="duie"))).prepare(tmp_path, print)


# ------------------------------------------------------------------------------------------------
# Decoding caps on an untrained model
# ------------------------------------------------------------------------------------------------
def _untrained(task):
  import flax.linen as nn
  import jax

  from roformer_jax.train import loop, sharding
  params = nn.meta.unbox(jax.jit(task.init_params)(jax.random.PRNGKey(0)))
  return params, loop.Runner(task, sharding.make_mesh(1, 1, 1), 8)


@pytest.mark.parametrize("kind", ["relation", "event"])
def test_caps_bound_decoding_of_an_untrained_model(init, tmp_path, kind):
  """Fresh heads score many cells above 0: with config.decode's caps each text keeps at most the capped
  candidates (far fewer than it has), and decoding the synthetic dev split stays fast."""
  from finetune.gplinker import EventTask, RelationTask
  cfg = _cfg(kind, init, tmp_path, head_size=32)
  cfg.data.update(dict(max_train=8, max_dev=24, max_test=8))
  cap = 6
  if kind == "relation":
    cfg.decode.max_entities = cap
  else:
    cfg.decode.update(dict(max_arguments=cap * 2, max_group=cap))
  task = (RelationTask if kind == "relation" else EventTask)(cfg)
  task.prepare(tmp_path, print)
  params, runner = _untrained(task)
  above = [int((out[task.names[0]] > 0).sum()) for _, out in task.rows_to_host(params, runner, "dev", task._outputs)]
  assert min(above) > 10 * cap, above  # the caps bind: far more candidates than kept
  start = time.perf_counter()
  predicted, _ = task.predict(params, runner, "dev")
  assert time.perf_counter() - start < 20
  for p in predicted:
    if kind == "relation":
      assert len({s for s, _, _ in p}) <= cap and len({o for _, _, o in p}) <= cap
    else:
      assert len({a for e in p for a in e}) <= cap * 2 and all(len(e) <= cap for e in p)
  assert any(p for p in predicted)


# ------------------------------------------------------------------------------------------------
# Resume
# ------------------------------------------------------------------------------------------------
def test_relation_rerun_after_sigkill_ends_as_the_straight_run(init, tmp_path):
  """SIGKILL right after the last checkpoint save (step 4) started: the rerun resumes from step 2 and gives the
  straight run's losses, final summary and predictions file."""
  import os
  import subprocess
  import sys
  from pathlib import Path
  root = Path(__file__).resolve().parents[1]
  _duie_folder(tmp_path / "duie", 8)

  def run(workdir, kill=False):
    args = ["--config", str(root / "finetune/configs/relation.py"), "--workdir", str(workdir),
            "--config.init", str(init[0]), "--config.data.source", "duie", "--config.data.dir", str(tmp_path / "duie"),
            "--config.seq_len", "48", "--config.head_size", "16", "--config.batch_size", "4", "--config.epochs", "2",
            "--config.log_every", "1"]
    cmd = [sys.executable] + ([str(root / "tests/multidevice/kill_at_save.py")] if kill else ["-m", "finetune.run"])
    crash = dict(KILL_CLI="finetune.run", KILL_WHAT="checkpoint", KILL_AT="4", KILL_MODE="during")
    env = dict(os.environ, PYTHONPATH=str(root), JAX_PLATFORMS="cpu", **(crash if kill else {}))
    out = subprocess.run(cmd + args, cwd=root, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == (-9 if kill else 0), (out.returncode, out.stdout[-2000:], out.stderr[-2000:])
    return out

  def losses(workdir):
    rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}

  straight = json.loads(run(tmp_path / "a").stdout.strip().splitlines()[-1])
  run(tmp_path / "b", kill=True)
  out = run(tmp_path / "b")
  resumed = json.loads(out.stdout.strip().splitlines()[-1])
  assert f"resumed from {tmp_path / 'b' / 'checkpoints' / '2'}" in out.stdout
  for key in ("checkpoint", "best_checkpoint", "predictions", "tokens_per_s", "mfu"):
    straight.pop(key), resumed.pop(key)
  assert resumed == straight and straight["step"] == 4
  assert losses(tmp_path / "b") == losses(tmp_path / "a")
  assert (tmp_path / "a" / "predictions" / "test.jsonl").read_text() == (
      tmp_path / "b" / "predictions" / "test.jsonl").read_text()
