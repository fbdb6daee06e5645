"""CLUE classification (AFQMC, TNEWS, IFLYTEK, OCNLI, CMNLI, CSL, CLUEWSC) as bojone/CLUE-bert4keras runs it.

`tasks`: files, labels and recipe per task (data); `data`: readers of the official files and the
submission writer. Encoding is `roformer_jax.data.classify.encode_examples`, the optimiser
`roformer_jax.train.adafactor.clue_adafactor`.
"""

from finetune.clue.data import Split, mark_wsc_spans, read_split, task_dir, test_splits, write_predictions
from finetune.clue.tasks import FILES, FOLDERS, RECIPES, SUBMISSIONS, TASKS, recipe

__all__ = ["Split", "mark_wsc_spans", "read_split", "task_dir", "test_splits", "write_predictions", "FILES",
           "FOLDERS", "RECIPES", "SUBMISSIONS", "TASKS", "recipe"]
