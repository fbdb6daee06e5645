"""The AdaFactor port against bert4keras' own AdaFactor, and the documented differences of optax.adafactor."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from roformer_jax.train import adafactor as A

import bert4keras  # noqa: E402,F401  (a test dependency: never skipped)
import bert4keras_ref  # noqa: E402  (tests/ is on sys.path under pytest)

STEPS = 6
# Gradient scale per step: a jump (x10) makes the 1/sqrt(v) update exceed RMS 1, so clipping is exercised.
SCALES = [1.0, 1.0, 10.0, 0.1, 1.0, 3.0]
# A large learning rate: steps comparable to the parameters, so comparing float32 parameters compares the
# updates to ~1e-7 of their size (and the parameter RMS, which scales the steps, changes a lot).
LR = 0.3
CASES = {
    # the CLUE recipe (snippets.py): full second moments, momentum 0.9
    "clue": dict(learning_rate=LR, beta1=0.9, min_dim_size_to_factor=10**6),
    # factored second moments (2-D and 3-D tensors), with and without momentum, fixed beta2
    "factored": dict(learning_rate=LR, beta1=0.9, min_dim_size_to_factor=4),
    "factored_no_momentum_beta2": dict(learning_rate=LR, beta1=0.0, beta2=0.99, min_dim_size_to_factor=4),
    # absolute steps, no clipping
    "no_scale_no_clip": dict(learning_rate=LR, beta1=0.9, multiply_by_parameter_scale=False,
                             clipping_threshold=None),
    # the CLUE recipe's optimizer2 / optimizer4 (C3, CHID, CMRC2018): extend_with_gradient_accumulation(AdaFactor),
    # whose decay clock counts micro-batches; ours gets the micro-batches' mean gradient once per update
    "clue_accum2": dict(learning_rate=LR, beta1=0.9, min_dim_size_to_factor=10**6, grad_accum_steps=2),
    "factored_accum4": dict(learning_rate=LR, beta1=0.9, min_dim_size_to_factor=4, grad_accum_steps=4),
}


def _tensors(seed, accum=1):
  """params, and grads [STEPS * accum, ...] per name (accum micro-batches per step)."""
  rng = np.random.default_rng(seed)
  params = {"w": rng.normal(0, 0.05, (16, 12)), "k": rng.normal(0, 0.02, (6, 4, 5)),
            "b": np.zeros(12), "g": np.ones(8), "s": np.array(0.3)}  # b: RMS 0 -> the 1e-3 floor
  params = {n: p.astype(np.float32) for n, p in params.items()}
  grads = {n: np.stack([rng.normal(0, s, p.shape) for s in np.repeat(SCALES, accum)]).astype(np.float32)
           for n, p in params.items()}
  grads["b"][:, :3] = 0.0  # columns that never get a gradient
  grads["g"] *= 1e-15  # g^2 ~ eps1 = 1e-30: where the second eps1 inside the square root shows
  return params, grads


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """{case: (params, grads, bert4keras params after each step)} from one bert4keras process."""
  tmp = tmp_path_factory.mktemp("adafactor")
  jobs, inputs = [], {}
  for i, (case, kwargs) in enumerate(CASES.items()):
    params, grads = _tensors(i, kwargs.get("grad_accum_steps", 1))
    np.savez(tmp / f"p{i}.npz", **params)
    np.savez(tmp / f"g{i}.npz", **grads)
    jobs.append({"adafactor": {"kwargs": kwargs, "params": str(tmp / f"p{i}.npz"), "grads": str(tmp / f"g{i}.npz")}})
    inputs[case] = (params, grads)
  results = bert4keras_ref.run(jobs, tmp)
  return {case: (*inputs[case], r) for case, r in zip(CASES, results)}


def _trajectory(tx, params, grads, accum=1):
  """Params after each of STEPS updates of `tx` (jitted) on the mean of `accum` micro-batches' grads (as the
  train step gives it), [STEPS + 1, ...] per name."""
  p = jax.tree.map(jnp.asarray, params)
  state = tx.init(p)
  update = jax.jit(tx.update)
  out = {n: [v] for n, v in params.items()}
  for t in range(STEPS):
    u, state = update({n: jnp.asarray(g[t * accum:(t + 1) * accum].mean(0)) for n, g in grads.items()}, state, p)
    p = optax.apply_updates(p, u)
    for n in out:
      out[n].append(np.asarray(p[n]))
  return {n: np.stack(v) for n, v in out.items()}


@pytest.mark.parametrize("case", CASES)
def test_matches_bert4keras_adafactor(reference, case):
  """Every step's update (difference of float32 parameters) equals bert4keras' within 2e-6 of the step's
  largest update plus 2 ulp of the parameters (the rounding of the two parameter values it is taken from)."""
  params, grads, ref = reference[case]
  kwargs = dict(CASES[case])
  accum = kwargs.pop("grad_accum_steps", 1)
  ours = _trajectory(A.adafactor(kwargs.pop("learning_rate"), accum_steps=accum, **kwargs), params, grads, accum)
  for n in params:
    ref_steps, our_steps = np.diff(ref[n], axis=0), np.diff(ours[n], axis=0)
    for t in range(STEPS):
      scale = np.abs(ref_steps[t]).max()
      assert scale > 0
      err = np.abs(our_steps[t] - ref_steps[t]).max()
      tol = 2e-6 * scale + 2 * np.spacing(np.abs(ref[n][t:t + 2]).max())
      assert err <= tol, (case, n, t, err, scale, tol)
  # Tensors that were factored really were (so the factored path is what matched).
  factored = {n for n, p in params.items() if A.factored_axes(p.shape, kwargs.get("min_dim_size_to_factor", 128))}
  assert factored == ({"w", "k"} if kwargs.get("min_dim_size_to_factor") == 4 else set())


def test_clipping_and_momentum_are_exercised(reference):
  """Guards the comparison above: some step is clipped, and momentum changes the update."""
  params, grads, _ = reference["clue"]
  u = {n: jnp.asarray(g) for n, g in grads.items()}
  rms_tx = A.scale_by_factored_rms(min_dim_size_to_factor=10**6)
  state, clipped = rms_tx.init(params), False
  for t in range(STEPS):
    raw, state = rms_tx.update({n: g[t] for n, g in u.items()}, state)
    clipped |= any(float(jnp.sqrt(jnp.mean(jnp.square(r)))) > 1.0 for r in jax.tree.leaves(raw))
  assert clipped
  with_m = _trajectory(A.clue_adafactor(LR), params, grads)
  without = _trajectory(A.adafactor(LR, min_dim_size_to_factor=10**6), params, grads)
  assert np.abs(with_m["w"][2] - without["w"][2]).max() > 1e-5


def test_optax_adafactor_differs_as_documented():
  """optax.adafactor with the recipe's settings: the same first step; at step 2 the difference is
  exactly the momentum/parameter-scale order term; a gradient of 1e-15 shows the second eps1."""
  lr, beta1 = 10.0, 0.9  # a huge lr, so that rms(p) changes between steps
  rng = np.random.default_rng(0)
  p0 = {"w": jnp.asarray(rng.normal(0, 0.01, (8, 6)), jnp.float32)}
  g = [{"w": jnp.asarray(rng.normal(0, 1, (8, 6)), jnp.float32)} for _ in range(2)]
  ours = A.adafactor(lr, beta1=beta1, min_dim_size_to_factor=10**6)
  theirs = optax.adafactor(learning_rate=lr, min_dim_size_to_factor=10**6, decay_rate=0.8, clipping_threshold=1.0,
                           momentum=beta1, multiply_by_parameter_scale=True, eps=1e-30)
  s_o, s_t = ours.init(p0), theirs.init(p0)
  u1_o, s_o = ours.update(g[0], s_o, p0)
  u1_t, s_t = theirs.update(g[0], s_t, p0)
  np.testing.assert_allclose(u1_t["w"], u1_o["w"], rtol=1e-6)
  p1 = optax.apply_updates(p0, u1_o)
  u2_o, _ = ours.update(g[1], s_o, p1)
  u2_t, _ = theirs.update(g[1], s_t, p1)
  rms = lambda x: max(float(jnp.sqrt(jnp.mean(jnp.square(x)))), 1e-3)
  s1, s2 = rms(p0["w"]), rms(p1["w"])
  assert abs(s2 / s1 - 1) > 0.2  # the parameter scale moved a lot
  c1 = u1_o["w"] / (-(1 - beta1) * lr * s1)  # step 1's clipped, normalised update
  predicted = -beta1 * (1 - beta1) * lr * c1 * (s1 - s2)
  diff = u2_t["w"] - u2_o["w"]
  assert float(jnp.abs(diff).max()) > 0.05 * float(jnp.abs(u2_o["w"]).max())  # a real difference
  np.testing.assert_allclose(diff, predicted, atol=1e-6 * float(jnp.abs(u2_o["w"]).max()))
  # The second eps1: first update of a gradient 1e-15 (g^2 = eps1) is g/sqrt(3e-30) here, g/sqrt(2e-30) in optax.
  tiny = {"w": jnp.full((8, 6), 1e-15, jnp.float32)}
  u_o, _ = ours.update(tiny, ours.init(p0), p0)
  u_t, _ = theirs.update(tiny, theirs.init(p0), p0)
  np.testing.assert_allclose(u_o["w"] / u_t["w"], np.sqrt(2 / 3), rtol=1e-5)


def test_recipe_state_is_unfactored_and_jits():
  params = {"emb": jnp.zeros((2000, 256)), "kernel": jnp.ones((64, 64))}
  tx = A.clue_adafactor()
  state = tx.init(params)
  assert state[0].v["emb"].shape == (2000, 256) and state[0].v_row["emb"].shape == (1,)
  _, state = jax.jit(tx.update)(params, state, params)
  assert int(state[0].count) == 1
  factored = A.adafactor(1e-3, min_dim_size_to_factor=128).init(params)[0]
  assert factored.v_row["emb"].shape == (1, 256) and factored.v_col["emb"].shape == (2000, 1)
  assert factored.v["kernel"].shape == (64, 64)  # 64 < 128: not factored


def test_config_name_adafactor_is_the_clue_recipe():
  """`optimizer.name = "adafactor"` (with b1 = 0.9) is the recipe `clue_adafactor` builds."""
  import optax
  from roformer_jax.train import adafactor as ada, optim
  params = {"w": jnp.asarray(np.random.RandomState(0).randn(6, 5), jnp.float32)}
  grads = [{"w": jnp.asarray(np.random.RandomState(s).randn(6, 5), jnp.float32)} for s in (1, 2)]
  a = optim.make_optimizer("adafactor", optax.constant_schedule(5e-4), b1=0.9)
  b = ada.clue_adafactor(5e-4)
  sa, sb = a.init(params), b.init(params)
  for g in grads:
    ua, sa = a.update(g, sa, params)
    ub, sb = b.update(g, sb, params)
    np.testing.assert_array_equal(np.asarray(ua["w"]), np.asarray(ub["w"]))
  # The run's accum_steps reaches the optimiser (the CLUE config's C3 recipe accumulates 4): optimizer4.
  from finetune.configs import clue
  cfg = clue.get_config("c3")
  assert cfg.accum_steps == 4
  a, _ = optim.from_config(cfg.optimizer, 10, cfg.accum_steps)
  b, plain = ada.clue_adafactor(5e-4, accum_steps=4), ada.clue_adafactor(5e-4)
  sa, sb, sp = a.init(params), b.init(params), plain.init(params)
  for g in grads:
    ua, sa = a.update(g, sa, params)
    ub, sb = b.update(g, sb, params)
    up, sp = plain.update(g, sp, params)
    np.testing.assert_array_equal(np.asarray(ua["w"]), np.asarray(ub["w"]))
  assert not np.allclose(np.asarray(ua["w"]), np.asarray(up["w"]))
