"""The NER grid of docs/RESULTS.md: pretrained vs scratch, GlobalPointer vs Efficient GlobalPointer, RoPE on/off.

  python -m finetune.ner_results --init workdir/tiny_cpu --out workdir/ner_results [--seeds 0,1,2]

Every run is `finetune.run` on `finetune/configs/ner.py` (its defaults: People's Daily, the first 3,000 training
sentences, 1,000 dev, the full test split; seq 128, batch 32, 5 epochs, AdamW 1e-3; best dev F1 kept) with:

  gp          GlobalPointer with RoPE, from the checkpoint   (what `make finetune-ner` trains)
  gp_scratch  the same from random weights
  egp         Efficient GlobalPointer with RoPE, from the checkpoint
  gp_norope   GlobalPointer without RoPE, from the checkpoint

Summaries go to <out>/results.jsonl (finetune/grid.py: a rerun skips finished runs); at the end one markdown table
of test P/R/F1, mean ± sd over the seeds.
"""

from __future__ import annotations

from pathlib import Path

from absl import app, flags

from finetune.grid import mean_sd

flags.DEFINE_string("init", "workdir/tiny_cpu", "Checkpoint to start from (anything from_pretrained reads).")
flags.DEFINE_string("out", "workdir/ner_results", "Where the runs and results.jsonl go.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (head init, data order, dropout).")
flags.DEFINE_list("setups", ["gp", "gp_scratch", "egp", "gp_norope"], "Which setups (see the docstring).")
flags.DEFINE_bool("report", False, "Only print the table of the runs finished so far.")
FLAGS = flags.FLAGS

SETUPS = {"gp": {}, "gp_scratch": {"from_scratch": True}, "egp": {"head": "egp"}, "gp_norope": {"rope": False}}


def _config(**overrides):
  from finetune.configs import ner
  cfg = ner.get_config()
  cfg.update_from_flattened_dict(overrides)
  return cfg


def table(results: dict[str, dict]) -> str:
  rows = ["| setup | test F1 | test precision | test recall |", "|---|---|---|---|"]
  for setup in FLAGS.setups:
    got = [results[f"{setup}_s{s}"] for s in FLAGS.seeds if f"{setup}_s{s}" in results]
    rows.append(f"| {setup} | " + " | ".join(mean_sd([r[k] for r in got])
                                           for k in ("test_f1", "test_precision", "test_recall")) + " |")
  return "\n".join(rows)


def main(argv):
  del argv
  from finetune import run as finetune_run  # after flag parsing: it defines the fine-tuning CLI's flags
  from finetune.grid import quiet, run_grid
  quiet()
  grid = [(f"{setup}_s{seed}", finetune_run.run, dict(init=FLAGS.init, seed=int(seed), log_every=50, **SETUPS[setup]))
          for seed in FLAGS.seeds for setup in FLAGS.setups]
  results = run_grid(grid, Path(FLAGS.out), _config, ("dev_f1", "test_f1"), run_missing=not FLAGS.report)
  print(table(results))


if __name__ == "__main__":
  app.run(main)
