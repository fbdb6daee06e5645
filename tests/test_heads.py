"""The sequence classifier head and its loss: pooling against the encoder's own output, the [CLS]-only last
layer, the loss against a NumPy softmax cross-entropy, and the MFU numerator against XLA's cost analysis."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import roformer_jax as rj
from roformer_jax import objectives
from roformer_jax.heads import SequenceClassifier

CFG = rj.get_config("tiny", vocab_size=300, hidden_dropout=0.0, attention_dropout=0.0)


def _inputs():
  rng = np.random.RandomState(0)
  ids = rng.randint(5, 300, size=(3, 12)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1, 7:] = 0
  mask[2, 3:] = 0
  ids[mask == 0] = 0
  return ids, mask


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("pooling", ["first", "mean", "max"])
def test_pooling_matches_the_encoder_output(version, pooling):
  cfg = CFG.replace(version=version) if version == "v2" else rj.get_config(
      "roformer_v1_char_small", vocab_size=300, hidden_size=64, num_heads=4, intermediate_size=96, num_layers=2,
      hidden_dropout=0.0, attention_dropout=0.0)
  ids, mask = _inputs()
  model = SequenceClassifier(cfg, 3, pooling)
  params = rj.init_params(model, jax.random.PRNGKey(0))
  assert set(params) == {"roformer", "classifier"}
  assert set(params["classifier"]) == ({"kernel", "bias"} if version == "v1" else {"kernel"})
  logits = np.asarray(model.apply({"params": params}, ids, None, mask))
  h = np.asarray(rj.RoFormerModel(cfg).apply({"params": params["roformer"]}, ids, None, mask), np.float64)
  m = mask[..., None].astype(bool)
  pooled = {"first": h[:, 0], "mean": (h * m).sum(1) / m.sum(1), "max": np.where(m, h, -np.inf).max(1)}[pooling]
  want = pooled @ np.asarray(params["classifier"]["kernel"], np.float64)
  if version == "v1":
    want = want + np.asarray(params["classifier"]["bias"])
  assert logits.shape == (3, 3) and logits.dtype == np.float32
  np.testing.assert_allclose(logits, want, atol=2e-5, rtol=1e-5)


def test_classification_loss_is_the_mean_cross_entropy_over_real_examples():
  ids, mask = _inputs()
  model = SequenceClassifier(CFG, 4)
  params = rj.init_params(model, jax.random.PRNGKey(1))
  batch = dict(input_ids=ids, token_type_ids=np.zeros_like(ids), attention_mask=mask,
               labels=np.array([0, 3, 1], np.int32), weights=np.array([1, 1, 0], np.float32))
  loss_sum, stats = objectives.classification_loss(model)(params, batch, jax.random.PRNGKey(0), jnp.int32(0))
  logits = np.asarray(model.apply({"params": params}, ids, None, mask), np.float64)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  ce = -logp[np.arange(3), batch["labels"]]
  np.testing.assert_allclose(float(loss_sum), ce[:2].sum(), rtol=1e-5)
  assert float(stats["weight"]) == 2.0
  assert float(stats["accuracy"]) == float((logits.argmax(-1) == batch["labels"])[:2].sum())
  evals = objectives.classification_eval(model)(params, batch)
  np.testing.assert_allclose(float(evals["loss"]), ce[:2].sum(), rtol=1e-5)
  # Tied logits count as the first class (argmax, as the predictions written), not correct for every label.
  tied = dict(labels=np.array([0, 1], np.int32), weights=np.ones(2, np.float32))
  _, stats = objectives._classification_sums(jnp.full((2, 2), 0.5), tied)
  assert float(stats["accuracy"]) == 1.0


def test_flop_count_matches_xla_cost_analysis():
  """finetune.classify's MFU numerator: the encoder with its last layer at [CLS] only, plus the head."""
  from roformer_jax.train import flops
  cfg = rj.get_config("tiny", num_layers=3, hidden_size=256, num_heads=4, intermediate_size=1024, vocab_size=3000,
                      hidden_dropout=0.0, attention_dropout=0.0, attention_options=(("implementation", "xla"),))
  model = SequenceClassifier(cfg, 5)
  params = rj.init_params(model, jax.random.PRNGKey(0))
  batch, seq = 2, 64
  ids = jnp.ones((batch, seq), jnp.int32)
  cost = jax.jit(lambda p: model.apply({"params": p}, ids)).lower(params).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  ratio = cost["flops"] / (flops.encoder_flops(cfg, batch, seq, 1) + 2 * batch * cfg.hidden_size * 5)
  assert 1.0 <= ratio < 1.02, ratio


@pytest.mark.parametrize("pooling", ["first", "mean", "max"])
def test_an_all_padding_row_keeps_the_sums_finite(pooling):
  """The eval pipeline fills the last batch with all-zero rows (weight 0): their logits must be finite, or
  loss * 0 is NaN and poisons the dev loss (max pooling over no real token gave -inf)."""
  ids, mask = _inputs()
  ids[2], mask[2] = 0, 0
  model = SequenceClassifier(CFG, 3, pooling)
  params = rj.init_params(model, jax.random.PRNGKey(0))
  batch = dict(input_ids=ids, token_type_ids=np.zeros_like(ids), attention_mask=mask,
               labels=np.array([0, 2, 0], np.int32), weights=np.array([1, 1, 0], np.float32))
  assert np.isfinite(np.asarray(model.apply({"params": params}, ids, None, mask))).all()
  logits = np.asarray(model.apply({"params": params}, ids[:2], None, mask[:2]), np.float64)
  ce = -(logits - np.log(np.exp(logits).sum(-1, keepdims=True)))[np.arange(2), batch["labels"][:2]]
  np.testing.assert_allclose(float(objectives.classification_eval(model)(params, batch)["loss"]), ce.sum(), rtol=1e-5)
  grads = jax.grad(lambda p: objectives.classification_loss(model)(p, batch, jax.random.PRNGKey(0), jnp.int32(0))[0])(
      params)
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree_util.tree_leaves(grads))
