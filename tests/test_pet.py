"""PET on real reviews with a real char tokenizer: encoding, the reference's masking and loss, label scores."""

import itertools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from roformer_jax import corpus, objectives, tokenization
from roformer_jax.config import ConfigError, get_config
from roformer_jax.model import RoFormerForMaskedLM, init_params
from roformer_jax.pet import batches, masking, patterns, reviews, scoring

LABELS = reviews.LABELS
P = patterns.SENTIMENT_PATTERNS
VERB = patterns.SENTIMENT_VERBALIZER


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
  """The char vocab of the reviews, built as `roformer-vocab build-vocab` builds it."""
  path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
  tokenization.write_vocab(tokenization.build_char_vocab(corpus.review_lines()), path)
  return tokenization.load_tokenizer(path)


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
  return reviews.load_reviews(reviews.prepare_reviews(tmp_path_factory.mktemp("data")))


@pytest.fixture(scope="module")
def texts(splits):
  """300 test reviews, the 30 longest included (longer than 128 tokens)."""
  test = splits["test"].texts
  longest = sorted(test, key=len)[-30:]
  return list(test[:270]) + longest


@pytest.fixture(scope="module")
def model(tokenizer):
  cfg = get_config("tiny", vocab_size=tokenizer.vocab_size, hidden_dropout=0.0, attention_dropout=0.0)
  m = RoFormerForMaskedLM(cfg)
  return m, init_params(m, jax.random.PRNGKey(0))


def _encoder(tokenizer, pattern=P["P1"], verbalizer=VERB, max_length=128, **kw):
  return patterns.PetEncoder(tokenizer, pattern, verbalizer, LABELS, max_length=max_length, **kw)


# ------------------------------------------------------------------------------------------------
# Encoding
# ------------------------------------------------------------------------------------------------
def test_prefix_pattern_rows_equal_the_reference_construction(tokenizer, texts):
  """P1: the reference encodes prefix + text ('很满意。' + text, truncated at the end to 128) and
  puts [MASK] at index 1."""
  enc = _encoder(tokenizer)
  rows, blanks = enc.encode(texts)
  assert enc.label_token_ids.tolist() == [[tokenizer.token_to_id("不")], [tokenizer.token_to_id("很")]]
  assert np.all(blanks == 1)
  for text, row in zip(texts, rows):
    ref = tokenizer.encode("很满意。" + text, max_length=128).ids
    ref[1] = tokenizer.mask_id
    assert row.tolist() == ref
  assert max(map(len, rows)) == 128 and sum(len(r) == 128 for r in rows) >= 30


@pytest.mark.parametrize("name", ["P2", "P5"])
def test_blank_positions_and_text_only_truncation(tokenizer, texts, name):
  enc = _encoder(tokenizer, P[name])
  rows, blanks = enc.encode(texts)
  prefix, suffix = P[name].split("{text}")
  for text, row, blank in zip(texts, rows, blanks):
    whole = tokenizer.encode(prefix.replace("＿", "很") + text + suffix.replace("＿", "很")).ids
    assert row[blank].tolist() == [tokenizer.mask_id]
    if len(whole) <= 128:  # fits: the reference's ids with [MASK] at the blank
      whole[int(blank[0])] = tokenizer.mask_id
      assert row.tolist() == whole
    else:  # too long: only the text is cut, from its end; the pattern and the blank stay
      assert len(row) == 128
      text_ids = tokenizer.encode(text).ids[1:-1]
      pattern_ids = [tokenizer.token_to_id(c) for c in (prefix + suffix).replace("＿", "")]
      assert len(pattern_ids) == enc.pattern_length - 1
      n = 128 - 2 - enc.pattern_length
      if name == "P2":
        assert row[1:n + 1].tolist() == text_ids[:n] and row[n + 2:-1].tolist() == pattern_ids
        assert blank.tolist() == [n + 1]
      else:
        assert row[-n - 1:-1].tolist() == text_ids[:n] and blank.tolist() == [6]


def test_multi_token_blank_and_plain_rows(tokenizer, texts):
  enc = _encoder(tokenizer, "感觉＿＿。{text}", {"pos": "喜欢", "neg": "讨厌"})
  ids = tokenizer.token_to_id
  assert enc.width == 2 and enc.label_token_ids.tolist() == [[ids("讨"), ids("厌")], [ids("喜"), ids("欢")]]
  rows, blanks = enc.encode(texts[:5])
  assert np.all(blanks == [3, 4]) and all(r[3:5].tolist() == [tokenizer.mask_id] * 2 for r in rows)
  plain = enc.encode_plain(texts)
  assert [r.tolist() for r in plain] == [tokenizer.encode(t, max_length=128).ids for t in texts]


@pytest.mark.parametrize("pattern, match", [
    ("满意。{text}", r"config\.pattern = '满意。\{text\}' must contain exactly one blank .*found 0"),
    ("_满意。{text}", r"config\.pattern .* found 0 \(write the blank as the full-width ＿"),
    ("＿满意＿{text}", r"config\.pattern .* exactly one blank .*found 2"),
    ("＿满意。", r"config\.pattern = '＿满意。' must contain \{text\} exactly once, found 0"),
    ("＿{text}{text}", r"config\.pattern .* exactly once, found 2"),
    ("＿龘。{text}", r"config\.pattern = '＿龘。\{text\}': '龘。' has characters not in the vocabulary"),
    ("＿" + "好" * 130 + "{text}", r"config\.pattern .* no room for the text in max_length = 128"),
])
def test_pattern_errors_name_the_config_key(tokenizer, pattern, match):
  with pytest.raises(ConfigError, match=match):
    _encoder(tokenizer, pattern)


@pytest.mark.parametrize("pattern, verbalizer, match", [
    (P["P1"], {"pos": "很"}, r"config\.verbalizer has no word for label\(s\) \['neg'\]"),
    (P["P1"], {"pos": "很", "neg": "不", "neutral": "还"}, r"config\.verbalizer names label\(s\) \['neutral'\]"),
    (P["P1"], {"pos": "龘", "neg": "不"}, r"config\.verbalizer\['pos'\] = '龘' is not in the vocabulary"),
    (P["P1"], {"pos": "很", "neg": "不好"},
     r"config\.verbalizer\['neg'\] = '不好' is 2 tokens .* but the blank in config\.pattern = '＿满意。\{text\}' is 1"),
    ("＿＿满意。{text}", VERB, r"config\.verbalizer\['neg'\] = '不' is 1 tokens .* is 2 \(＿＿\)"),
    (P["P1"], {"pos": "很", "neg": "很"}, r"config\.verbalizer: labels 'neg' and 'pos' have the same word '很'"),
    (P["P1"], {"pos": "", "neg": "不"}, r"config\.verbalizer\['pos'\] must be a non-empty string"),
    (P["P1"], ["很", "不"], r"config\.verbalizer must map each label to a word"),
])
def test_verbalizer_errors_name_the_config_key(tokenizer, pattern, verbalizer, match):
  with pytest.raises(ConfigError, match=match):
    _encoder(tokenizer, pattern, verbalizer)


def test_error_keys_are_the_callers(tokenizer):
  with pytest.raises(ConfigError, match=r"^config\.pet\.pattern"):
    _encoder(tokenizer, "{text}", pattern_key="config.pet.pattern")
  with pytest.raises(ConfigError, match=r"^config\.pet\.verbalizer has no word"):
    _encoder(tokenizer, verbalizer={"pos": "很"}, verbalizer_key="config.pet.verbalizer")


# ------------------------------------------------------------------------------------------------
# Masking
# ------------------------------------------------------------------------------------------------
def test_masking_follows_the_reference_rule_token_by_token(tokenizer, texts):
  """Each token's fate is read off the same uniform draw the function made: [MASK] below 0.12,
  kept below 0.135, a random id in [1, V-1] below 0.15, else kept with no target."""
  V = tokenizer.vocab_size
  for n, row in enumerate(_encoder(tokenizer).encode_plain(texts[:100])):
    rng = np.random.default_rng((5, n))
    source, target = masking.random_masking(row, rng, mask_id=tokenizer.mask_id, vocab_size=V)
    twin = np.random.default_rng((5, n))
    r, rand = twin.random(len(row)), twin.integers(1, V, size=len(row))
    for t, (x, s, y, u, z) in enumerate(zip(row, source, target, r, rand)):
      if u < 0.15 * 0.8:
        assert (s, y) == (tokenizer.mask_id, x)
      elif u < 0.15 * 0.9:
        assert (s, y) == (x, x)
      elif u < 0.15:
        assert (s, y) == (z, x)
      else:
        assert (s, y) == (x, 0)


def test_masking_rates_on_every_train_review(tokenizer, splits):
  """About 850k tokens: 15% selected, 12% [MASK], 1.5% kept, 1.5% random (each within 4 sigma of
  its binomial mean), [CLS]/[SEP] selected like any token, random ids uniform on [1, V-1]."""
  V, mask = tokenizer.vocab_size, tokenizer.mask_id
  rows = _encoder(tokenizer).encode_plain(splits["train"].texts)
  rng = np.random.default_rng(0)
  out = [masking.random_masking(r, rng, mask_id=mask, vocab_size=V) for r in rows]
  ids = np.concatenate(rows)
  src, tgt = np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out])
  N = len(ids)
  assert N > 800_000
  selected = tgt != 0
  as_mask = selected & (src == mask)
  changed = selected & (src != ids) & (src != mask)
  kept = selected & (src == ids)
  # A random draw can hit the original id or [MASK] itself (p = 1 / (V - 1) each): count those too.
  for got, p in ((selected.sum(), 0.15), (as_mask.sum(), 0.12 + 0.015 / (V - 1)),
                 (kept.sum(), 0.015 + 0.015 / (V - 1)), (changed.sum(), 0.015 * (V - 3) / (V - 1))):
    assert abs(got - N * p) <= 4 * np.sqrt(N * p * (1 - p)), (got, N * p)
  assert np.all(tgt[selected] == ids[selected]) and np.all(src[~selected] == ids[~selected])
  ends = np.isin(ids, [tokenizer.cls_id, tokenizer.sep_id])
  n_ends = int(ends.sum())
  assert n_ends == 2 * len(rows) and abs(selected[ends].sum() - 0.15 * n_ends) <= 4 * np.sqrt(n_ends * 0.1275)
  # Random ids: the tokens at positions drawn "random", pooled with a large direct sample.
  direct = np.concatenate([masking.random_masking(np.full(4000, 7), np.random.default_rng(s), mask_id=mask,
                                                  vocab_size=V)[0] for s in range(60)])
  rand = direct[(direct != 7) & (direct != mask)]
  assert rand.min() >= 1 and rand.max() <= V - 1 and np.isin(rand, [1, 2, 3]).any()
  counts = np.bincount(rand, minlength=V)[1:]
  counts = np.delete(counts, [mask - 1, 7 - 1])  # ids a random draw cannot be told apart from
  assert stats.chisquare(counts).pvalue > 1e-3


def test_training_row_forces_the_label_at_the_blank(tokenizer, texts):
  enc = _encoder(tokenizer, "感觉＿＿。{text}", {"pos": "喜欢", "neg": "讨厌"})
  rows, blanks = enc.encode(texts)
  P_ = masking.default_max_predictions(128, 2)
  assert P_ == 48
  for n, (row, blank) in enumerate(zip(rows, blanks)):
    label = n % 2
    ex = masking.training_row(row, np.random.default_rng(n), mask_id=enc.mask_id, vocab_size=tokenizer.vocab_size,
                              max_predictions=P_, blank_positions=blank, label_ids=enc.label_token_ids[label])
    assert ex["input_ids"][blank].tolist() == [enc.mask_id] * 2
    assert ex["masked_positions"][:2].tolist() == blank.tolist()
    assert ex["masked_labels"][:2].tolist() == enc.label_token_ids[label].tolist()
    # The gathered targets are the dense ones: random targets elsewhere, the label at the blank.
    _, dense = masking.random_masking(row, np.random.default_rng(n), mask_id=enc.mask_id,
                                      vocab_size=tokenizer.vocab_size)
    dense[blank] = enc.label_token_ids[label]
    w = ex["masked_weights"] > 0
    assert int(ex["masked_overflow"]) == 0 and w.sum() == (dense != 0).sum()
    assert sorted(zip(ex["masked_positions"][w].tolist(), ex["masked_labels"][w].tolist())) == \
        [(int(i), int(dense[i])) for i in np.flatnonzero(dense)]
  # Too few slots: the blank is kept, the rest counted as overflow.
  ex = masking.training_row(rows[-1], np.random.default_rng(1), mask_id=enc.mask_id, vocab_size=tokenizer.vocab_size,
                            max_predictions=3, blank_positions=blanks[-1], label_ids=enc.label_token_ids[0])
  assert ex["masked_positions"][:2].tolist() == blanks[-1].tolist() and ex["masked_overflow"] > 0


# ------------------------------------------------------------------------------------------------
# Regimes and batches
# ------------------------------------------------------------------------------------------------
def test_regimes(splits):
  train = splits["train"]
  lab, unl = batches.regime_data("zero_shot", train, 200, 0)
  assert len(lab) == 0 and unl == ()
  lab, unl = batches.regime_data("unsupervised", train, 200, 0)
  assert len(lab) == 0 and unl == train.texts
  lab, unl = batches.regime_data("few_shot", train, 200, 0)
  assert len(lab) == 200 and unl == ()
  lab2, unl = batches.regime_data("semi_supervised", train, 200, 0)
  assert lab2.texts == lab.texts and len(unl) == len(train) - 200 and not set(unl) & set(lab.texts)
  with pytest.raises(ConfigError, match=r"config\.regime = 'fewshot'; expected one of"):
    batches.regime_data("fewshot", train, 200, 0)
  with pytest.raises(ConfigError, match=r"config\.k = 0"):
    batches.regime_data("few_shot", train, 0, 0)


def test_random_ids_stay_in_the_tokenizers_vocab_when_the_model_has_padded_rows(tokenizer, splits):
  # The reference draws np.random.choice(tokenizer._vocab_size - 1) + 1: rows a model pads for the hardware
  # (here 1,000 more than the tokenizer) are ids no text gives, never replacement tokens.
  enc = _encoder(tokenizer, max_length=64)
  train = splits["train"].subset(np.arange(0, len(splits["train"]), 40))
  lab, unl = batches.regime_data("semi_supervised", train, 20, seed=1)
  data = batches.PetTrainBatches(enc, lab, unl, batch_size=32, seed=3, vocab_size=tokenizer.vocab_size + 1000)
  ids = np.concatenate([data.batch(s)["input_ids"].ravel() for s in range(11)])
  assert ids.max() < tokenizer.vocab_size
  assert len(np.unique(ids)) > 0.2 * tokenizer.vocab_size  # random replacements do span the vocab


def test_semi_supervised_batches(tokenizer, splits):
  enc = _encoder(tokenizer, max_length=64)
  train = splits["train"].subset(np.arange(0, len(splits["train"]), 40))  # 347 examples
  lab, unl = batches.regime_data("semi_supervised", train, 20, seed=1)
  data = batches.PetTrainBatches(enc, lab, unl, batch_size=32, seed=3)
  assert (data.num_labelled, data.num_examples, data.steps_per_epoch) == (20, 347, 11)
  epoch = [data.batch(s) for s in range(11)]
  seen = np.concatenate([b["example_index"] for b in epoch])
  assert sorted(seen[seen >= 0].tolist()) == list(range(347)) and (seen < 0).sum() == 11 * 32 - 347
  assert all(np.array_equal(data.batch(4)[k], epoch[4][k]) for k in epoch[4])  # a function of the step
  assert not np.array_equal(data.batch(15)["example_index"], epoch[4]["example_index"])  # epoch 1: new order
  rows, _ = enc.encode(lab.texts)
  plain = enc.encode_plain(unl)
  mixed = 0
  for b in epoch:
    assert b["input_ids"].shape == (32, 64) and b["masked_positions"].shape == (32, data.max_predictions)
    idx = b["example_index"]
    mixed += bool((idx >= 20).any() and ((idx >= 0) & (idx < 20)).any())
    for i, row, pos, labels, w in zip(idx, b["input_ids"], b["masked_positions"], b["masked_labels"],
                                      b["masked_weights"]):
      if i < 0:  # filler: [CLS] [SEP], nothing to predict
        assert row[:3].tolist() == [tokenizer.cls_id, tokenizer.sep_id, 0] and w.sum() == 0
      elif i < 20:  # labelled: the pattern, the label forced at the blank
        assert row[1] == tokenizer.mask_id and pos[0] == 1 and w[0] == 1
        assert labels[0] == enc.label_token_ids[lab.labels[i], 0]
        n = len(rows[i])
        assert not row[n:].any() and (row[:n] != rows[i]).sum() <= w.sum() - 1
      else:  # unlabelled: the text alone, no pattern; changed only where a target is
        n = len(plain[i - 20])
        assert not row[n:].any() and (row[:n] != plain[i - 20]).sum() <= w.sum()
  assert mixed >= 5  # labelled and unlabelled rows share batches
  other = batches.PetTrainBatches(enc, lab, unl, batch_size=32, seed=4)
  assert not np.array_equal(other.batch(0)["example_index"], epoch[0]["example_index"])
  with pytest.raises(ConfigError, match="nothing to train on"):
    batches.PetTrainBatches(enc, *batches.regime_data("zero_shot", train, 0, 0), batch_size=8, seed=0)


def test_eval_batches_fill_the_last_batch(tokenizer, splits):
  enc = _encoder(tokenizer, P["P2"], max_length=64)
  data = splits["dev"].subset(np.arange(0, 1736, 100))  # 18 examples
  out = list(batches.eval_batches(enc, data, 8))
  assert len(out) == 3 and [b["weights"].sum() for b in out] == [8, 8, 2]
  assert np.concatenate([b["labels"] for b in out])[:18].tolist() == data.labels.tolist()
  rows, blanks = enc.encode(data.texts)
  assert np.array_equal(np.concatenate([b["masked_positions"] for b in out])[:18], blanks)
  assert out[-1]["input_ids"][0, :len(rows[16])].tolist() == rows[16].tolist()


# ------------------------------------------------------------------------------------------------
# Loss and scores on a real tiny model
# ------------------------------------------------------------------------------------------------
def _log_softmax(x):
  x = np.asarray(x, np.float64)
  return x - x.max(-1, keepdims=True) - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True))


@pytest.fixture(scope="module")
def train_batch(tokenizer, splits):
  """A semi-supervised batch and its dense targets, rebuilt from the masking draws alone."""
  enc = _encoder(tokenizer, "感觉＿＿。{text}", {"pos": "喜欢", "neg": "讨厌"}, max_length=64)
  train = splits["train"].subset(np.arange(0, len(splits["train"]), 500))
  lab, unl = batches.regime_data("semi_supervised", train, 8, seed=0)
  data = batches.PetTrainBatches(enc, lab, unl, batch_size=16, seed=2)
  b = data.batch(0)
  rows, blanks = enc.encode(lab.texts)
  rows += enc.encode_plain(unl)
  dense = np.zeros_like(b["input_ids"])
  for r, i in enumerate(b["example_index"].tolist()):
    _, t = masking.random_masking(rows[i], np.random.default_rng((2, 0, i)), mask_id=enc.mask_id,
                                  vocab_size=tokenizer.vocab_size)
    if i < 8:
      t[blanks[i]] = enc.label_token_ids[lab.labels[i]]
    dense[r, :len(t)] = t
  return b, dense


def test_loss_is_the_mean_cross_entropy_over_all_targets(model, train_batch):
  m, params = model
  b, dense = train_batch
  full = np.asarray(m.apply({"params": params}, b["input_ids"], b["token_type_ids"]))  # [B, L, V]
  logp = _log_softmax(full)
  rows, cols = np.nonzero(dense)
  want = -logp[rows, cols, dense[rows, cols]].mean()
  gathered = m.apply({"params": params}, b["input_ids"], b["token_type_ids"], masked_positions=b["masked_positions"])
  got = scoring.mlm_loss(gathered, b["masked_labels"], b["masked_weights"])
  np.testing.assert_allclose(float(got), want, rtol=1e-5)
  # The shared objective, as a trainer calls it, gives the same mean.
  loss_sum, st = objectives.masked_lm_loss(m)(params, {k: jnp.asarray(v) for k, v in b.items()},
                                              jax.random.PRNGKey(0), jnp.int32(0))
  assert float(st["weight"]) == len(rows)
  np.testing.assert_allclose(float(loss_sum / st["weight"]), want, rtol=1e-5)
  assert float(scoring.mlm_loss(gathered, b["masked_labels"], jnp.zeros_like(b["masked_weights"]))) == 0.0


KERAS_LOSS = """
import sys
import numpy as np
from bert4keras.backend import K
y_true, y_pred = np.load(sys.argv[1]), np.load(sys.argv[2])
y_mask = K.cast(K.not_equal(y_true, 0), K.floatx())
loss = K.sparse_categorical_crossentropy(y_true, y_pred)
print(float(K.sum(loss * y_mask) / K.sum(y_mask)))
"""


def test_loss_equals_the_reference_keras_loss(model, train_batch, tmp_path):
  """The reference's CrossEntropy: Keras sparse CE on the softmax output, masked where y_true = 0,
  summed and divided by the number of targets; computed by bert4keras' Keras backend."""
  import bert4keras_logits  # tests/ is on sys.path under pytest
  m, params = model
  b, dense = train_batch
  probs = jax.nn.softmax(m.apply({"params": params}, b["input_ids"], b["token_type_ids"]), -1)
  np.save(tmp_path / "y_true.npy", dense.astype(np.float32))
  np.save(tmp_path / "y_pred.npy", np.asarray(probs, np.float32))
  out = subprocess.run([sys.executable, "-c", KERAS_LOSS, str(tmp_path / "y_true.npy"), str(tmp_path / "y_pred.npy")],
                       env={**os.environ, **bert4keras_logits.ENV}, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]
  keras_loss = float(out.stdout.strip().splitlines()[-1])
  gathered = m.apply({"params": params}, b["input_ids"], b["token_type_ids"], masked_positions=b["masked_positions"])
  ours = float(scoring.mlm_loss(gathered, b["masked_labels"], b["masked_weights"]))
  np.testing.assert_allclose(ours, keras_loss, rtol=2e-5)


@pytest.mark.parametrize("pattern, verbalizer", [(P["P1"], VERB), ("感觉＿＿。{text}", {"pos": "喜欢", "neg": "讨厌"}),
                                                 ("{text}总之＿＿＿。", {"pos": "很满意", "neg": "不喜欢"})])
def test_label_scores_equal_the_reference_product_of_probabilities(model, tokenizer, splits, pattern, verbalizer):
  """tnews.py: y_pred[:, 0, ids[:, 0]] * y_pred[:, 1, ids[:, 1]] (* ...) on the softmax at the blank,
  argmax over labels; sentiment.py: y_pred[:, mask_idx, [neg_id, pos_id]].argmax(1)."""
  m, params = model
  enc = _encoder(tokenizer, pattern, verbalizer, max_length=64)
  data = splits["test"].subset(np.arange(0, 1736, 90))  # 20 examples
  eval_fn = jax.jit(scoring.label_eval(m, enc.label_token_ids))
  correct = weight = 0.0
  for b in batches.eval_batches(enc, data, 8):
    probs = np.exp(_log_softmax(m.apply({"params": params}, b["input_ids"], b["token_type_ids"])))
    rows = np.arange(len(b["input_ids"]))[:, None]
    at_blank = probs[rows, b["masked_positions"]]  # [B, w, V]
    ids = enc.label_token_ids
    ref = np.prod([at_blank[:, k, ids[:, k]] for k in range(enc.width)], axis=0)  # [B, C]
    gathered = m.apply({"params": params}, b["input_ids"], b["token_type_ids"], masked_positions=b["masked_positions"])
    scores = np.asarray(scoring.label_log_scores(gathered, ids))
    np.testing.assert_allclose(scores, np.log(ref), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(scoring.predict_labels(gathered, ids)), ref.argmax(1))
    if enc.width == 1:
      neg_id, pos_id = tokenizer.token_to_id("不"), tokenizer.token_to_id("很")
      np.testing.assert_array_equal(ref.argmax(1), probs[rows[:, 0], 1][:, [neg_id, pos_id]].argmax(1))
    sums = eval_fn(params, b)
    correct += float(sums["correct"])
    weight += float(sums["weight"])
    ok = (ref.argmax(1) == b["labels"]) * b["weights"]
    np.testing.assert_allclose(float(sums["correct"]), ok.sum())
    ce = -np.log(ref[np.arange(len(ref)), b["labels"]] / ref.sum(1))
    np.testing.assert_allclose(float(sums["loss"]), (ce * b["weights"]).sum(), rtol=1e-4)
  assert weight == 20
