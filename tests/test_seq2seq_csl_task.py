"""The CSL title-generation task (finetune/csl.py) through finetune.run on files in the example's format
(title<TAB>abstract), written here from People's Daily lines: the title is each line's first characters. The
dev file repeats training lines, whose titles a tiny model fits in a few dozen steps: greedy decoding must then
give them back (decoding as the model was trained). The summary's scores are `csl.title_scores` of the written
predictions."""

import json

import pytest

from roformer_jax import corpus
from roformer_jax.config import ConfigError
from roformer_jax.seq2seq import csl

STEPS, TITLE = 40, 4


@pytest.fixture(scope="module")
def setup(tiny_pretrained, tmp_path_factory):
  folder = tmp_path_factory.mktemp("csl_files")
  lines = [l for l in corpus.people_daily_lines() if 12 <= len(l) <= 40][:48]
  splits = {"train.tsv": lines[:32], "val.tsv": lines[:8], "test.tsv": lines[40:48]}
  for name, rows in splits.items():
    (folder / name).write_text("".join(f"{l[:TITLE]}\t{l}\n" for l in rows), encoding="utf-8")
  return tiny_pretrained("csl_init"), folder


def _config(init, folder, **over):
  from finetune.configs import csl as csl_config
  cfg = csl_config.get_config()
  cfg.update(dict(init=str(init), steps=STEPS, batch_size=8, seq_len=48, max_title=TITLE + 2, eval_every=20,
                  checkpoint_every=20, log_every=10))
  cfg.data.dir = str(folder)
  cfg.optimizer.update(dict(learning_rate=3e-3, warmup_steps=2))
  cfg.model.overrides = dict(hidden_dropout=0.0, attention_dropout=0.0)
  cfg.update_from_flattened_dict(over)
  return cfg


def test_csl_trains_and_scores_its_predictions(setup, tmp_path):
  from finetune.run import run
  init, folder = setup
  summary = run(_config(init, folder, **{"decode.beam_size": 2}), tmp_path / "run")
  assert summary["task"] == "csl" and summary["step"] == STEPS
  for split in ("dev", "test"):
    for metric in ("rouge_1", "rouge_2", "rouge_l", "bleu"):
      for prefix in ("", "beam2_"):
        assert 0.0 <= summary[f"{prefix}{split}_{metric}"] <= 1.0, (prefix, split, metric)
  # The best dev BLEU (the evaluation that kept the checkpoint) is the final params' dev BLEU.
  assert summary["dev_bleu"] == pytest.approx(summary["best_eval_bleu"], abs=1e-12)
  rows = [json.loads(l) for l in open(summary["predictions"], encoding="utf-8")]
  titles = [e.title for e in csl.load_csl(folder)["test"]]
  assert [r["title"] for r in rows] == titles and [r["id"] for r in rows] == list(range(8))
  greedy = csl.title_scores([r["greedy"] for r in rows], titles)
  assert {f"test_{k.replace('-', '_')}": v for k, v in greedy.items()} == {
      k: v for k, v in summary.items() if k.startswith("test_")}
  # Fitted: the dev abstracts are training ones, and decoding gives their titles back.
  assert summary["dev_rouge_1"] > 0.8, summary


def test_csl_config_errors(setup):
  from finetune.csl import CslTask
  init, folder = setup
  with pytest.raises(ConfigError, match="config.data.dir is empty"):
    CslTask(_config(init, ""))
  with pytest.raises(ConfigError, match="config.max_title = 1"):
    CslTask(_config(init, folder, max_title=1))
