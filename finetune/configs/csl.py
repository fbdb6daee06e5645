"""CSL title generation (abstract -> title) with UniLM and TeaForN, the bert4keras example's recipe
(finetune/csl.py; finetune-spec §e.2): maxlen 256, titles up to 32 tokens, batch 16, 20 epochs, Adam 1e-5,
greedy decoding in evaluation, the best dev BLEU kept.

  python -m finetune.run --config finetune/configs/csl.py --workdir workdir/csl --config.init=PATH \
      --config.data.dir=/data/csl [--config.teaforn.n=2 --config.decode.beam_size=4]
"""

import ml_collections

from finetune.configs.common import base_config


def get_config():
  c = base_config()
  c.task = "csl"
  c.data = ml_collections.ConfigDict(dict(dir=""))  # train.tsv, val.tsv, test.tsv (title<TAB>abstract)
  c.teaforn = ml_collections.ConfigDict(dict(
      n=1,                          # passes; 1 = plain teacher forcing (the example)
      weights=(),                   # lambda_k, one per pass; () = 1 for every pass
      reuse_source=True,            # passes 2..N recompute the target rows only (exact without dropout)
  ))
  c.decode = ml_collections.ConfigDict(dict(
      beam_size=0,                  # > 1: finish() also decodes dev and test with beam search of this size
      length_penalty=0.0,           # beam score = log p / length ** length_penalty
  ))
  c.max_title = 32                  # generated tokens at most (the example's AutoTitle maxlen); titles are
                                    # trained on their first max_title - 1 tokens and the [SEP]
  c.eval_examples = 0               # the first dev abstracts, decoded at each evaluation and in finish; 0 = all
  c.test_examples = 0               # the first test abstracts (scored and written in finish); 0 = all
  c.seq_len = 256                   # the example's maxlen: the abstract gets seq_len - max_title tokens
  c.batch_size = 16
  c.epochs = 20
  c.optimizer.name = "adamw"        # the example's Adam: no weight decay, constant rate
  c.optimizer.learning_rate = 1e-5
  c.optimizer.weight_decay = 0.0
  c.best_metric = "eval_bleu"
  return c
