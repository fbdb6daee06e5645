"""The TeaForN grid of docs/RESULTS.md: N = 1 against N = 2 and 3, at equal steps and at equal compute.

  python -m finetune.seq2seq_results --init workdir/tiny_cpu --out workdir/seq2seq_results [--seeds 0,1,2]

Every run is `finetune.run` on `finetune/configs/pinyin.py` (pinyin -> characters over People's Daily; the best
dev character accuracy kept; test decoded greedily and with beam 4) with `--steps` optimiser steps of batch 32, and:

  n1, n2, n3        N = 1 (teacher forcing), 2, 3 passes, all at `--steps` steps        (equal steps)
  n1_c2, n1_c3      N = 1 with as many steps as fit the matmul FLOPs of n2, n3          (equal compute)
  n1_x2             N = 1 at 2x the steps (what n2 cost before the source was reused)

Equal compute counts matmul FLOPs per step (`finetune.seq2seq.teaforn_step_flops`, for the `--init` model): TeaForN
pass 1 is a full forward, passes 2..N recompute the target rows only (the source is reused, exact), and every
pass runs the LM head at the target rows. For the tiny CPU checkpoint (vocab 5,632 x hidden 128: the head is
half of a pass) a step of N = 2 is 1.79 and N = 3 2.58 teacher-forcing steps; the steps are rounded. Summaries go to
<out>/results.jsonl (finetune/grid.py); at the end one markdown table, mean ± sd over the seeds.
"""

from __future__ import annotations

from pathlib import Path

from absl import app, flags

from finetune.grid import mean_sd

flags.DEFINE_string("init", "workdir/tiny_cpu", "Checkpoint to start from (anything from_pretrained reads).")
flags.DEFINE_string("out", "workdir/seq2seq_results", "Where the runs and results.jsonl go.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
flags.DEFINE_list("setups", ["n1", "n2", "n3", "n1_c2", "n1_c3"], "Which setups (see the docstring).")
flags.DEFINE_integer("steps", 400, "Optimiser steps of the equal-steps runs (one pass over the data is 402).")
flags.DEFINE_bool("report", False, "Only print the table of the runs finished so far.")
FLAGS = flags.FLAGS

# setup -> (passes, step multiple); a string multiple: the FLOPs of that many passes (see the docstring)
SETUPS = {"n1": (1, 1), "n2": (2, 1), "n3": (3, 1), "n1_c2": (1, "n2"), "n1_c3": (1, "n3"), "n1_x2": (1, 2)}
KEYS = ("test_char_accuracy", "test_exact_match", "beam4_test_char_accuracy", "beam4_test_exact_match")


def _config(**overrides):
  from finetune.configs import pinyin
  cfg = pinyin.get_config()
  cfg.update_from_flattened_dict(overrides)
  return cfg


def steps_of(setup: str) -> int:
  """The optimiser steps of a setup: `--steps` x its multiple (FLOPs-matched for n1_c2, n1_c3)."""
  n, mult = SETUPS[setup]
  if isinstance(mult, str):
    from finetune.seq2seq import teaforn_step_flops
    from roformer_jax.convert.orbax_ckpt import read_model_config
    from roformer_jax.seq2seq import teaforn
    from roformer_jax.seq2seq.pinyin import MAX_CHARS
    cfg = read_model_config(Path(FLAGS.init), hidden_dropout=0.0, attention_dropout=0.0)  # as the pinyin config
    flops = lambda k: teaforn_step_flops(cfg, 32, MAX_CHARS, k, teaforn.reuses_source(cfg, deterministic=False))
    mult = flops(SETUPS[mult][0]) / flops(1)
  return int(round(FLAGS.steps * mult))


def table(results: dict[str, dict]) -> str:
  rows = ["| setup | N | steps | greedy char acc | greedy exact | beam 4 char acc | beam 4 exact |",
          "|---|---|---|---|---|---|---|"]
  for setup in FLAGS.setups:
    got = [results[f"{setup}_s{s}"] for s in FLAGS.seeds if f"{setup}_s{s}" in results]
    n, _ = SETUPS[setup]
    rows.append(f"| {setup} | {n} | {steps_of(setup)} | " + " | ".join(mean_sd([r[k] for r in got]) for k in KEYS)
                + " |")
  if got := [r for r in results.values() if "baseline_char_accuracy" in r]:
    rows.append("| baseline (most frequent character per syllable) | – | – | "
                f"{got[0]['baseline_char_accuracy']:.3f} | "
                f"{got[0]['baseline_exact_match']:.3f} | – | – |")
  return "\n".join(rows)


def main(argv):
  del argv
  from finetune import run as finetune_run  # after flag parsing: it defines the fine-tuning CLI's flags
  from finetune.grid import quiet, run_grid
  quiet()
  grid = []
  for seed in FLAGS.seeds:
    for setup in FLAGS.setups:
      n, steps = SETUPS[setup][0], steps_of(setup)
      grid.append((f"{setup}_s{seed}", finetune_run.run,
                   {"init": FLAGS.init, "seed": int(seed), "teaforn.n": n, "steps": steps, "eval_every": steps // 4,
                    "checkpoint_every": steps, "log_every": 100, "decode.beam_size": 4}))
  results = run_grid(grid, Path(FLAGS.out), _config, KEYS[:2], run_missing=not FLAGS.report)
  print(table(results))


if __name__ == "__main__":
  app.run(main)
