"""The CLUE classification tasks as data: files, labels and training recipe per task.

Everything here is what bojone/CLUE-bert4keras (cc3c17e, `src/<task>.py` and `src/snippets.py`) does;
its RoFormerV2 copy (ZhuiyiTechnology/roformer-v2 `clue/`) differs only in CLUEWSC's span marks (see
`data.WSC_STYLES`). The ml_collections configs in finetune/configs/ read `RECIPES[task]`.

Common to every task (snippets.py and the task scripts):
* encoder: the last layer's output; head: Dense(num_labels) with a bias (Keras' default, zero init) and
  the encoder's kernel initializer, on the [CLS] vector; softmax cross-entropy averaged over the batch;
* segment ids all 0, also for pairs; at most `max_len` tokens (`roformer_jax.data.classify`);
* optimiser: bert4keras AdaFactor(learning_rate=5e-4, beta1=0.9, min_dim_size_to_factor=10**6), constant
  learning rate, no warm-up, no weight decay (`roformer_jax.train.adafactor.clue_adafactor`);
* an epoch is ceil(n_train / batch_size) steps over freshly shuffled training data; where the reference's
  last batch of an epoch is partial, ours is filled from the next epoch's shuffle (every step a full batch:
  one compiled shape), so an epoch's dev evaluation comes up to batch_size - 1 examples later; dev accuracy
  after every epoch; the weights with the best dev accuracy so far (strictly greater) are kept and predict
  the test files.
"""

from __future__ import annotations

OPTIMIZER = {"name": "adafactor", "learning_rate": 5e-4, "beta1": 0.9, "min_dim_size_to_factor": 10**6,
             "schedule": "constant"}

_COMMON = {"max_len": 128, "batch_size": 32, "epochs": 10, "learning_rate": OPTIMIZER["learning_rate"],
           "metric": "accuracy", "pooling": "first"}

NLI_LABELS = ("entailment", "neutral", "contradiction")
TNEWS_LABELS = ("100", "101", "102", "103", "104", "106", "107", "108", "109", "110", "112", "113", "114", "115",
                "116")  # the 15 used codes: 105 and 111 never occur

# task -> recipe. `labels`: the label strings of the files, in the reference's class order (class i
# predicts labels[i], which is also what the submission file holds).
RECIPES: dict[str, dict] = {
    "afqmc": {**_COMMON, "labels": ("0", "1")},
    "tnews": {**_COMMON, "labels": TNEWS_LABELS},
    "iflytek": {**_COMMON, "labels": tuple(str(i) for i in range(119))},
    "ocnli": {**_COMMON, "labels": NLI_LABELS},
    "cmnli": {**_COMMON, "labels": NLI_LABELS},
    "csl": {**_COMMON, "labels": ("0", "1")},
    "cluewsc": {**_COMMON, "epochs": 30, "labels": ("false", "true")},
}

# task -> split -> file name in the task's official folder (afqmc_public/, ..., cluewsc2020_public/).
FILES: dict[str, dict[str, str]] = {
    "afqmc": {"train": "train.json", "dev": "dev.json", "test": "test.json"},
    "tnews": {"train": "train.json", "dev": "dev.json", "test": "test.json", "test1.0": "test1.0.json"},
    "iflytek": {"train": "train.json", "dev": "dev.json", "test": "test.json"},
    "ocnli": {"train": "train.50k.json", "dev": "dev.json", "test": "test.json"},
    "cmnli": {"train": "train.json", "dev": "dev.json", "test": "test.json"},
    "csl": {"train": "train.json", "dev": "dev.json", "test": "test.json"},
    "cluewsc": {"train": "train.json", "dev": "dev.json", "test": "test.json", "test1.0": "test1.0.json"},
}

# task -> the folder of the official zip (<name>.zip unpacks to it); `data.task_dir` also takes the bare task
# name, the reference scripts' `data_path + 'afqmc/'` layout.
FOLDERS: dict[str, str] = {"afqmc": "afqmc_public", "tnews": "tnews_public", "iflytek": "iflytek_public",
                           "ocnli": "ocnli_public", "cmnli": "cmnli_public", "csl": "csl_public",
                           "cluewsc": "cluewsc2020_public"}

# task -> test split -> CLUE submission file name (<task><version>_predict.json; CLUE 1.1 is `test`).
SUBMISSIONS: dict[str, dict[str, str]] = {
    "afqmc": {"test": "afqmc_predict.json"},
    "tnews": {"test": "tnews11_predict.json", "test1.0": "tnews10_predict.json"},
    "iflytek": {"test": "iflytek_predict.json"},
    "ocnli": {"test": "ocnli_50k_predict.json"},
    "cmnli": {"test": "cmnli_predict.json"},
    "csl": {"test": "csl_predict.json"},
    "cluewsc": {"test": "cluewsc11_predict.json", "test1.0": "cluewsc10_predict.json"},
}

TASKS = tuple(RECIPES)


def recipe(task: str) -> dict:
  """A copy of RECIPES[task] with `num_labels` and the optimiser added; KeyError names the known tasks."""
  if task not in RECIPES:
    raise KeyError(f"unknown CLUE task {task!r}; expected one of {TASKS}")
  r = dict(RECIPES[task])
  r["num_labels"] = len(r["labels"])
  r["optimizer"] = dict(OPTIMIZER, learning_rate=r["learning_rate"])
  return r
