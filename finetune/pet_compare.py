r"""`make finetune`: PET against the [CLS] classifier fine-tuned on the same labels (finetune-spec §a).

  python -m finetune.pet_compare --config finetune/configs/pet.py --workdir workdir/pet_k200 \
      --config.init=workdir/tiny_cpu [--config.k=200 --config.seed=0 --config.baseline_learning_rate=...]

1. PET (the config's regime: few_shot or semi_supervised) into <workdir>/pet (`finetune/pet.py`).
2. The regime's labelled examples and the dev and test splits as JSON lines in <workdir>/labels.
3. The [CLS] classifier (`finetune/classify.py`) on those labels into <workdir>/cls: the same checkpoint,
   optimiser, schedule, epochs, batch, sequence length, dropout and seed; the best dev accuracy kept.

Prints one JSON line: PET's summary plus `baseline_dev_accuracy` and `baseline_test_accuracy`. Rerunning
the command resumes whichever part was unfinished.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from absl import app

from finetune import run as finetune_run  # defines the fine-tuning CLI's flags, which this one takes
from roformer_jax.config import ConfigError
from roformer_jax.train import cli

# The keys the baseline takes from the PET config, so that the two differ only in how they use the labels.
SHARED = ("init", "vocab", "dtype", "attention", "scan_layers", "remat", "seq_len", "steps", "epochs", "batch_size",
          "accum_steps", "seed", "log_every", "eval_every", "checkpoint_every", "keep", "mesh", "optimizer")


def write_labels(cfg, folder: Path) -> dict[str, str]:
  """The labelled examples of `cfg.regime` (K per `cfg.k`, `cfg.seed`) and the dev and test splits as JSON
  lines {text, label}, written atomically by process 0; every process returns the paths."""
  import jax

  from roformer_jax.data.jsonl import write_jsonl
  from roformer_jax.pet import batches, reviews
  splits = reviews.load_reviews(reviews.prepare_reviews(Path(cfg.data_dir).expanduser()))
  labelled, _ = batches.regime_data(cfg.regime, splits["train"], cfg.k, cfg.seed, cfg.kshot_mode)
  sets = {"train": labelled, "dev": splits["dev"], "test": splits["test"]}
  paths = {name: str(folder / f"{name}.jsonl") for name in sets}
  if jax.process_index() == 0:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in sets.items():
      rows = ({"text": t, "label": data.label_names[int(y)]} for t, y in zip(data.texts, data.labels))
      write_jsonl(paths[name], rows)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("pet_compare labels written")
  return paths


def baseline_config(cfg, paths: dict[str, str]):
  """The [CLS] classifier's config: finetune/configs/classify.py with the PET run's shared keys."""
  from finetune.configs import classify
  from roformer_jax.pet import reviews
  base = classify.get_config()
  for key in SHARED:
    base[key] = cfg[key]
  base.model.overrides = dict(cfg.model.overrides)
  if cfg.baseline_learning_rate:
    base.optimizer.learning_rate = cfg.baseline_learning_rate
  base.best_metric = "eval_accuracy"
  base.data.update(dict(train=paths["train"], dev=paths["dev"], test=paths["test"], labels=reviews.LABELS))
  return base


def run(cfg, workdir: str | Path) -> dict[str, Any]:
  if cfg.get("task") != "pet":
    raise ConfigError(f"config.task is {cfg.get('task')!r}; finetune.pet_compare runs the pet task "
                      "(finetune/configs/pet.py)")
  if cfg.regime not in ("few_shot", "semi_supervised"):
    raise ConfigError(f"config.regime = {cfg.regime!r}: the [CLS] baseline needs labels "
                      "(few_shot or semi_supervised); use finetune.run for the other regimes")
  workdir = Path(workdir).expanduser().absolute()
  pet = finetune_run.run(cfg, workdir / "pet")
  if pet.get("preempted"):  # stop here; the same command resumes PET, then trains the baseline
    return pet
  baseline = finetune_run.run(baseline_config(cfg, write_labels(cfg, workdir / "labels")), workdir / "cls")
  if baseline.get("preempted"):  # saved, not finished (no dev/test accuracy yet): the same command resumes it
    return baseline
  return {**pet, "pet_workdir": str(workdir / "pet"), "baseline_workdir": str(workdir / "cls"),
          "baseline_dev_accuracy": baseline["dev_accuracy"], "baseline_test_accuracy": baseline["test_accuracy"],
          "baseline_best_step": baseline.get("best_step")}


def main(argv):
  del argv
  cli.main("finetune", run)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
