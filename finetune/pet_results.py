r"""The PET grid of docs/RESULTS.md: zero-shot patterns, PET vs [CLS] at several K, unsupervised, semi-supervised.

  python -m finetune.pet_results --init workdir/tiny_cpu --out workdir/pet_results [--seeds 0,1,2] \
      [--ks 32,100,200] [--steps 150] [--pattern P1] [--plot docs/img/pet_vs_cls.png]

Every run is `finetune.run` / `finetune.pet_compare` on `finetune/configs/pet.py` with the overrides below, in
this process, into <workdir>/<run name>; its summary is appended to <workdir>/results.jsonl, so a rerun skips
finished runs. At the end: one markdown table (mean ± sd over seeds) on stdout and the accuracy-vs-K plot.

Budget: every trained run has the same number of optimiser steps (`--steps`, batch 32), evaluated on dev 10
times; the best dev accuracy's params are tested. Few-shot K = 32 thus sees its examples ~150 times, K = 200
~24 times, and the [CLS] baseline gets the same steps, evaluations, optimiser and seed as PET.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from absl import app, flags

from finetune.grid import mean_sd, sample_sd

flags.DEFINE_string("init", "workdir/tiny_cpu", "Checkpoint to start from (anything from_pretrained reads).")
flags.DEFINE_string("out", "workdir/pet_results", "Where the runs and results.jsonl go.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (K-shot subsets, masking, init of new params).")
flags.DEFINE_list("ks", ["32", "100", "200"], "Labelled examples for few-shot.")
flags.DEFINE_list("patterns", ["P1", "P2", "P3", "P4", "P5"], "Zero-shot patterns.")
flags.DEFINE_integer("steps", 150, "Optimiser steps of every trained run.")
flags.DEFINE_integer("semi_k", 200, "Labelled examples of the semi-supervised runs.")
flags.DEFINE_string("pattern", "P1", "The pattern of the trained (few-shot, unsupervised, semi-supervised) runs.")
flags.DEFINE_string("plot", "docs/img/pet_vs_cls.png", "Accuracy-vs-K plot ('' = none).")
flags.DEFINE_bool("report", False, "Only print the table of the runs finished so far.")
FLAGS = flags.FLAGS


def _config(**overrides):
  from finetune.configs import pet
  cfg = pet.get_config()
  cfg.update_from_flattened_dict(overrides)
  return cfg


def runs() -> list[tuple[str, str, dict[str, Any]]]:
  """(name, driver, config overrides) of every run of the grid."""
  trained = dict(init=FLAGS.init, steps=FLAGS.steps, eval_every=max(1, FLAGS.steps // 10),
                 checkpoint_every=FLAGS.steps, log_every=50, pattern=FLAGS.pattern)
  out = [(f"zero_shot_{p}", "run", dict(init=FLAGS.init, regime="zero_shot", pattern=p)) for p in FLAGS.patterns]
  for seed in map(int, FLAGS.seeds):
    for k in map(int, FLAGS.ks):
      out.append((f"few_shot_k{k}_s{seed}", "compare", dict(trained, regime="few_shot", k=k, seed=seed)))
    out.append((f"unsupervised_s{seed}", "run", dict(trained, regime="unsupervised", seed=seed)))
    out.append((f"semi_supervised_k{FLAGS.semi_k}_s{seed}", "run",
                dict(trained, regime="semi_supervised", k=FLAGS.semi_k, seed=seed)))
  return out


def table(results: dict[str, dict]) -> str:
  rows = ["| run | test accuracy (PET) | test accuracy ([CLS] baseline) |", "|---|---|---|"]
  for p in FLAGS.patterns:
    r = results.get(f"zero_shot_{p}")
    # No training, so no seed: one deterministic number per pattern and checkpoint.
    rows.append(f"| zero-shot {p} `{r['pattern'] if r else ''}` | {r['test_accuracy']:.3f} (deterministic) | – |"
                if r else f"| zero-shot {p} | – | – |")
  groups = [(f"few-shot K={k}", f"few_shot_k{k}_s") for k in FLAGS.ks]
  groups += [("unsupervised (MLM on the train texts)", "unsupervised_s"),
             (f"semi-supervised K={FLAGS.semi_k}", f"semi_supervised_k{FLAGS.semi_k}_s")]
  for label, prefix in groups:
    got = [results[f"{prefix}{s}"] for s in FLAGS.seeds if f"{prefix}{s}" in results]
    base = [r["baseline_test_accuracy"] for r in got if "baseline_test_accuracy" in r]
    rows.append(f"| {label} | {mean_sd([r['test_accuracy'] for r in got])} | {mean_sd(base)} |")
  return "\n".join(rows)


def plot(results: dict[str, dict], path: Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np
  ks = [int(k) for k in FLAGS.ks]
  fig, ax = plt.subplots(figsize=(6, 4))
  counts = set()  # seeds per point: the title states those found, not those asked for (--report mid-grid)
  for key, label in (("test_accuracy", f"PET ({FLAGS.pattern})"), ("baseline_test_accuracy", "[CLS] fine-tuning")):
    acc = [[results[f"few_shot_k{k}_s{s}"][key] for s in FLAGS.seeds if f"few_shot_k{k}_s{s}" in results] for k in ks]
    mean = [np.mean(a) if a else np.nan for a in acc]
    sd = [sample_sd(a) for a in acc]  # one seed: no sd, so no bar (not a 0 one)
    counts.update(len(a) for a in acc)
    ax.errorbar(ks, mean, yerr=sd, marker="o", capsize=4, label=label)
  if f"zero_shot_{FLAGS.pattern}" in results:
    ax.axhline(results[f"zero_shot_{FLAGS.pattern}"]["test_accuracy"], ls="--", c="gray",
               label=f"PET zero-shot ({FLAGS.pattern})")
  from finetune.configs import pet
  from roformer_jax.pet import reviews
  test = reviews.load_reviews(reviews.prepare_reviews(Path(pet.get_config().data_dir)))["test"]
  majority = max(np.mean(test.labels == 1), np.mean(test.labels == 0))
  ax.axhline(majority, ls=":", c="black", label=f"majority class ({majority:.3f})")
  ax.set_xscale("log")
  ax.minorticks_off()
  ax.set_xticks(ks, [str(k) for k in ks])
  ax.set_xlabel("labelled examples K")
  ax.set_ylabel(f"test accuracy ({len(test):,} reviews)")
  n = f"{min(counts)}" if len(counts) == 1 else f"{min(counts)}–{max(counts)}"
  ax.set_title(f"PET vs [CLS] from {Path(FLAGS.init).name}, mean ± sd over {n} seed{'s' if max(counts) > 1 else ''}")
  ax.legend()
  fig.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.tmp.png")
  fig.savefig(tmp, dpi=120)
  tmp.replace(path)


def main(argv):
  del argv
  # Imported after flag parsing: these modules define the fine-tuning CLI's flags, which this one does not use.
  from finetune import pet_compare
  from finetune import run as finetune_run
  from finetune.grid import quiet, run_grid
  quiet()
  drivers = {"run": finetune_run.run, "compare": pet_compare.run}
  grid = [(name, drivers[driver], overrides) for name, driver, overrides in runs()]
  results = run_grid(grid, Path(FLAGS.out), _config, ("dev_accuracy", "test_accuracy", "baseline_test_accuracy"),
                     run_missing=not FLAGS.report)
  print(table(results))
  if FLAGS.plot:
    plot(results, Path(FLAGS.plot))
    print(f"plot: {FLAGS.plot}")


if __name__ == "__main__":
  app.run(main)
