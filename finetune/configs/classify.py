"""[CLS] sequence classification of labelled texts (finetune/classify.py): a tsv or jsonl per split.

  python -m finetune.run --config finetune/configs/classify.py --workdir workdir/classify \
      --config.init=workdir/tiny_cpu --config.data.train=train.tsv --config.data.dev=dev.tsv
"""

import ml_collections

from finetune.configs.common import base_config


def get_config():
  c = base_config()
  c.task = "classify"
  c.pooling = "first"               # first ([CLS]) | mean | max over real tokens
  c.data = ml_collections.ConfigDict(dict(
      train="",                     # text<TAB>label lines (.tsv/.txt) or JSON lines (.jsonl)
      dev="",                       # evaluated every epoch; its best accuracy picks the final params
      test="",                      # optional: accuracy and predictions (<workdir>/predictions/test.jsonl)
      text_field="text",            # .jsonl fields
      label_field="label",
      labels=()))                   # label names in id order; () = the sorted labels of the train file
  return c
