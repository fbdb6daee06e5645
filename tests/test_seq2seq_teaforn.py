"""TeaForN: N = 1 is plain teacher forcing exactly; pass k re-feeds pass k-1's shifted final hidden states
(checked against an independent per-position construction), with gradients through them; the look-ahead
property (pass 2's output at a target position does not see the gold token there)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import roformer_jax as rj
from roformer_jax.model import RoFormerForMaskedLM, init_params, stack_layers
from roformer_jax.seq2seq.teaforn import seq2seq_cross_entropy, teaforn_loss, teaforn_loss_at, teaforn_passes

L = 12
SRC, TOTAL = (4, 6, 3), (12, 10, 9)  # ragged source lengths and padding


def _setup(dropout=0.0):
  cfg = rj.get_config("roformer_v2_small", vocab_size=40, hidden_size=32, num_layers=2, num_heads=2,
                      intermediate_size=48, hidden_dropout=dropout, attention_dropout=dropout)
  model = RoFormerForMaskedLM(cfg)
  params = init_params(model, jax.random.PRNGKey(1))
  rng = np.random.RandomState(0)
  pos = np.arange(L)[None]
  mask = pos < np.array(TOTAL)[:, None]
  ids = np.where(mask, rng.randint(1, 40, (3, L)), 0).astype(np.int32)
  types = ((pos >= np.array(SRC)[:, None]) & mask).astype(np.int32)
  return model, params, jnp.asarray(ids), jnp.asarray(types), jnp.asarray(mask)


def test_one_pass_is_plain_teacher_forcing_exactly():
  model, params, ids, types, mask = _setup()
  plain = jax.jit(lambda p: seq2seq_cross_entropy(model.apply({"params": p}, ids, types, mask, unilm=True),
                                                  ids, types, mask))
  tea = jax.jit(lambda p: teaforn_loss(model, p, ids, types, mask, num_passes=1)[0])
  assert float(tea(params)) == float(plain(params))
  g_plain, g_tea = jax.grad(plain)(params), jax.grad(tea)(params)
  jax.tree_util.tree_map(np.testing.assert_array_equal, g_tea, g_plain)


def test_cross_entropy_counts_only_real_targets():
  # By hand: position i predicts token i + 1 for each real segment-1 token.
  model, params, ids, types, mask = _setup()
  logits = np.asarray(model.apply({"params": params}, ids, types, mask, unilm=True))
  lp = np.asarray(jax.nn.log_softmax(logits))
  terms = [-lp[b, t - 1, ids[b, t]] for b in range(3) for t in range(SRC[b], TOTAL[b])]
  np.testing.assert_allclose(seq2seq_cross_entropy(logits, ids, types, mask), np.mean(terms), rtol=1e-6)


def _manual_pass2(model, params, ids, types, mask, stop=False):
  """Pass 2 built position by position, independently of `refeed`."""
  h1, _ = model.apply({"params": params}, ids, types, mask, unilm=True, method=RoFormerForMaskedLM.hidden_and_logits)
  if stop:
    h1 = jax.lax.stop_gradient(h1)
  x = model.apply({"params": params}, ids, types, method=RoFormerForMaskedLM.embed)
  for b in range(3):
    for t in range(SRC[b], TOTAL[b]):
      x = x.at[b, t].set(h1[b, t - 1])
  _, logits = model.apply({"params": params}, ids, types, mask, unilm=True, inputs_embeds=x,
                          method=RoFormerForMaskedLM.hidden_and_logits)
  return seq2seq_cross_entropy(logits, ids, types, mask)


def test_second_pass_refeeds_shifted_hidden_states_with_gradients():
  model, params, ids, types, mask = _setup()
  lam = (0.3, 0.7)
  loss_fn = lambda p: teaforn_loss(model, p, ids, types, mask, num_passes=2, weights=lam)
  (loss, per_pass), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  plain = seq2seq_cross_entropy(model.apply({"params": params}, ids, types, mask, unilm=True), ids, types, mask)
  np.testing.assert_allclose(per_pass[0], plain, rtol=1e-6)
  np.testing.assert_allclose(per_pass[1], _manual_pass2(model, params, ids, types, mask), rtol=1e-6)
  np.testing.assert_allclose(loss, lam[0] * per_pass[0] + lam[1] * per_pass[1], rtol=1e-6)
  assert abs(float(per_pass[1] - per_pass[0])) > 1e-4  # the re-fed pass is a different function
  # d(pass-2 loss): equal to the manual construction's, and not to the one with the re-fed states frozen.
  g2 = jax.grad(lambda p: teaforn_loss(model, p, ids, types, mask, num_passes=2, weights=(0.0, 1.0))[0])(params)
  want = jax.grad(lambda p: _manual_pass2(model, p, ids, types, mask))(params)
  frozen = jax.grad(lambda p: _manual_pass2(model, p, ids, types, mask, stop=True))(params)
  flat = lambda g: np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(g)])
  np.testing.assert_allclose(flat(g2), flat(want), atol=1e-6, rtol=1e-4)
  assert np.abs(flat(g2) - flat(frozen)).max() > 1e-3 * np.abs(flat(want)).max()
  assert np.isfinite(flat(grads)).all()


def test_pass_k_looks_k_steps_ahead():
  # Pass k's output at target position t depends on gold inputs up to t - k + 1 only: changing the gold
  # token at t changes pass 1's output there but neither pass 2's nor pass 3's; at t - 1, not pass 3's.
  model, params, ids, types, mask = _setup()
  b, t = 0, SRC[0] + 4
  other = ids.at[b, t].set((ids[b, t] % 39) + 1)
  run = lambda x: [np.asarray(lg[b]) for _, lg in teaforn_passes(model, params, x, types, mask, num_passes=3)]
  base, changed = run(ids), run(other)
  assert np.abs(base[0][t] - changed[0][t]).max() > 1e-4
  np.testing.assert_allclose(changed[1][t], base[1][t], atol=1e-5)
  np.testing.assert_allclose(changed[2][t], base[2][t], atol=1e-5)
  assert np.abs(base[1][t + 1] - changed[1][t + 1]).max() > 1e-4
  np.testing.assert_allclose(changed[2][t + 1], base[2][t + 1], atol=1e-5)
  # the source never sees the target: its outputs are the same in every pass
  for k in (1, 2):
    np.testing.assert_allclose(base[k][:SRC[b] - 1], base[0][:SRC[b] - 1], atol=1e-5)


def test_training_mode_with_dropout_and_weight_count_check():
  model, params, ids, types, mask = _setup(dropout=0.1)
  rng = jax.random.PRNGKey(3)
  loss, per_pass = teaforn_loss(model, params, ids, types, mask, num_passes=2, deterministic=False, dropout_rng=rng)
  assert np.isfinite(per_pass).all()
  with pytest.raises(ValueError, match="2 weights for num_passes=3"):
    teaforn_loss(model, params, ids, types, mask, num_passes=3, weights=(1.0, 1.0))


def _target_rows(width=10):
  """Every target position of each row (SRC[b] .. TOTAL[b] - 1), padded with L."""
  rows = np.full((3, width), L, np.int32)
  for b in range(3):
    rows[b, :TOTAL[b] - SRC[b]] = np.arange(SRC[b], TOTAL[b])
  return jnp.asarray(rows)


@pytest.mark.parametrize("scan", [True, False])
def test_source_reuse_equals_recomputing_every_pass(scan):
  # Passes 2..N reading the source rows from pass 1 (target rows only recomputed) against full passes:
  # every pass's logits at every real position, the loss and its gradients; ragged sources, padding.
  model, params, ids, types, mask = _setup()
  assert not model.cfg.scan_layers
  if scan:
    model = RoFormerForMaskedLM(model.cfg.replace(scan_layers=True))
    params = stack_layers(params, model.cfg.num_layers)
  rows = _target_rows()
  full = teaforn_passes(model, params, ids, types, mask, num_passes=3)
  reuse = teaforn_passes(model, params, ids, types, mask, num_passes=3, target_rows=rows)
  real = np.asarray(mask)
  for (_, a), (_, b) in zip(full, reuse):
    np.testing.assert_allclose(np.asarray(b)[real], np.asarray(a)[real], atol=2e-5)
  assert np.abs(np.asarray(full[2][1])[real] - np.asarray(full[0][1])[real]).max() > 1e-3  # passes differ

  positions = jnp.maximum(rows - 1, 0)
  pmask = rows < L
  pos_rows = jnp.where(pmask, positions + 1, L)
  loss = lambda p, r: teaforn_loss_at(model, p, ids, types, mask, positions, pmask, num_passes=3,
                                      weights=(1.0, 0.5, 0.25), target_rows=r)[0]
  (l_full, g_full), (l_reuse, g_reuse) = (jax.value_and_grad(loss)(params, r) for r in (None, pos_rows))
  np.testing.assert_allclose(l_reuse, l_full, rtol=1e-6)
  flat = lambda g: np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(g)])
  np.testing.assert_allclose(flat(g_reuse), flat(g_full), atol=1e-6, rtol=1e-4)


def test_source_reuse_is_off_under_dropout():
  # Each pass draws its own dropout, the source included: reusing pass 1's would change the method.
  model, params, ids, types, mask = _setup(dropout=0.1)
  rng = jax.random.PRNGKey(3)
  kw = dict(num_passes=2, deterministic=False, dropout_rng=rng)
  a = teaforn_passes(model, params, ids, types, mask, **kw)
  b = teaforn_passes(model, params, ids, types, mask, target_rows=_target_rows(), **kw)
  for (_, x), (_, y) in zip(a, b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
