"""A CLUE task (routed by finetune/clue/task.py `make_task`) with the reference recipe.

  python -m finetune.run --config finetune/configs/clue.py --workdir workdir/clue/afqmc --config.init=PATH \
      --config.clue.task=afqmc --config.clue.dir=/data/clue      # or --config finetune/configs/clue.py:afqmc

`clue.dir` is the task's official folder (afqmc_public/) or a folder holding it. seq_len, batch_size, epochs and
accum_steps left at 0 take the task's recipe (max_len 128, batch 32, 10 epochs; CLUEWSC 30; C3 and CHID:
finetune/clue/choice.py; CMRC2018: finetune/clue/mrc.py; CLUENER: finetune/clue/ner.py); any value given wins.
CMRC2018 and CLUENER have keys of their own: name the task in the config string (clue.py:cmrc2018). The
optimiser is the recipe's for every task: bert4keras AdaFactor, lr 5e-4 constant, momentum 0.9, never factored.
Test predictions: <workdir>/predictions/<CLUE submission name> (afqmc_predict.json, ..., cmrc2018_predict.json,
cluener_predict.json).
"""

import ml_collections

from finetune.clue import choice, mrc
from finetune.clue import ner as clue_ner
from finetune.clue.tasks import OPTIMIZER, RECIPES
from finetune.configs.common import base_config
from roformer_jax.config import ConfigError

RECIPE_KEYS = {"seq_len": "max_len", "batch_size": "batch_size", "epochs": "epochs", "accum_steps": "accum_steps"}


def get_config(task: str = ""):
  c = base_config()
  c.task = "clue"
  c.clue = ml_collections.ConfigDict(dict(
      task=task,                    # afqmc | tnews | iflytek | ocnli | cmnli | csl | cluewsc | c3 | chid
                                    # | cmrc2018 | cluener
      dir="",                       # the official files: <dir>/train.json ... or <dir>/<task>_public/train.json
      wsc_style="clue-bert4keras",  # CLUEWSC span marks: clue-bert4keras (_x_ / [y]) | roformer-v2 ([[x]] / [[y]])
      predict=True))                # write test predictions for every test file present
  c.pooling = "first"
  # The reference's head is keras Dense(num_labels, kernel_initializer=base.initializer): a zero-initialised
  # bias also on RoFormerV2 (whose encoder has none). False = no bias, as our v2 default elsewhere.
  c.head_bias = True
  for key in RECIPE_KEYS:           # 0 = the task's recipe (resolve)
    c[key] = 0
  c.optimizer.name = OPTIMIZER["name"]
  c.optimizer.learning_rate = OPTIMIZER["learning_rate"]
  c.optimizer.b1 = OPTIMIZER["beta1"]
  c.optimizer.min_dim_size_to_factor = OPTIMIZER["min_dim_size_to_factor"]
  c.optimizer.weight_decay = 0.0
  c.optimizer.warmup_steps = 0
  c.optimizer.decay = OPTIMIZER["schedule"]
  c.best_metric = "eval_accuracy"
  if task in mrc.RECIPES:
    _cmrc_keys(c)
  elif task in clue_ner.RECIPES:
    _cluener_keys(c)
  if task:
    resolve(c)
  return c


def _cmrc_keys(c) -> None:
  """CMRC2018 (finetune/clue/mrc.py): GlobalPointer(heads=1, head_size=base.attention_head_size, use_bias=False)."""
  c.clue.stride = 128               # a window starts every `stride` context characters
  c.head_size = 0                   # 0 = the encoder's attention head size, as the reference
  c.rope = True
  c.head_bias = False
  c.best_metric = "eval_strict"     # the reference keeps its strict metric's best; eval_f1 / eval_em also logged


def _cluener_keys(c) -> None:
  """CLUENER2020 (finetune/clue/ner.py, on finetune.ner.NerTask): RoFormerV2's script's Efficient GlobalPointer."""
  c.head = "egp"                    # egp (roformer-v2 clue/cluener.py) | gp (bojone/CLUE-bert4keras)
  c.head_size = 64
  c.rope = True
  c.tril_mask = True
  c.head_bias = False
  c.from_scratch = False
  c.data_dir = ""                   # unused: People's Daily only
  c.data = ml_collections.ConfigDict(dict(source="cluener", dir="", strict=True, max_train=0, max_dev=0, max_test=0))
  c.best_metric = "eval_f1"


ALL_RECIPES = {**RECIPES, **choice.RECIPES, **mrc.RECIPES, **clue_ner.RECIPES}
OWN_KEYS = {"cmrc2018": "head_size", "cluener": "tril_mask"}  # a key only that task's config has (get_config)


def resolve(cfg) -> None:
  """Fills the keys left at 0 (seq_len, batch_size, epochs, accum_steps) from the recipe of config.clue.task."""
  task = cfg.clue.task
  if task not in ALL_RECIPES:
    raise ConfigError(f"config.clue.task: unknown CLUE task {task!r}; expected one of {', '.join(ALL_RECIPES)}")
  if task in OWN_KEYS and OWN_KEYS[task] not in cfg:
    raise ConfigError(f"config.clue.task={task} needs that task's config keys: use --config "
                      f"finetune/configs/clue.py:{task} (or get_config({task!r}))")
  for key, recipe_key in RECIPE_KEYS.items():
    if not cfg[key]:
      cfg[key] = ALL_RECIPES[task].get(recipe_key, 1)
