"""LAMB and AdamW (roformer_jax.train.optim) against bert4keras' own, as the RoFormer recipes build them."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from roformer_jax.train import optim

import bert4keras  # noqa: E402,F401  (a test dependency: never skipped)
import bert4keras_ref  # noqa: E402  (tests/ is on sys.path under pytest)

STEPS = 8
SCALES = [1.0, 1.0, 10.0, 0.1, 1.0, 3.0, 1.0, 0.5]
LR = 0.05
POINTS = {"3": 1.0, "6": 0.5}  # warm-up from 0 over 3 steps, then down to half (the recipe's shape)
CASES = {
    # RoFormerV2 pretraining (train_mlm.py): Adam without bias correction, decay 0.01 on every tensor
    "lamb_recipe": ("lamb", dict(bias_correction=False, weight_decay_rate=0.01),
                    dict(bias_correction=False, weight_decay=0.01)),
    "lamb_corrected": ("lamb", dict(bias_correction=True, weight_decay_rate=0.01),
                       dict(bias_correction=True, weight_decay=0.01)),
    # RoFormer v1 (train.py): AdamW, decay excluding Norm and bias (bert4keras matches the variable names)
    "adamw_v1": ("adamw", dict(weight_decay_rate=0.01, exclude_from_weight_decay=["norm", "bias"]),
                 dict(weight_decay=0.01, decay_exclude=("norm", "bias"))),
    "adamw_uncorrected": ("adamw", dict(bias_correction=False, weight_decay_rate=0.1),
                          dict(bias_correction=False, weight_decay=0.1)),
}


def _tensors(seed):
  rng = np.random.default_rng(seed)
  params = {"w": rng.normal(0, 0.05, (16, 12)), "emb": rng.normal(0, 0.02, (20, 6)),
            "bias": np.zeros(12), "norm_scale": np.ones(8)}  # bias: norm 0 -> trust ratio 1
  params = {n: p.astype(np.float32) for n, p in params.items()}
  grads = {n: np.stack([rng.normal(0, s, p.shape) for s in SCALES]).astype(np.float32) for n, p in params.items()}
  return params, grads


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("optim")
  jobs, inputs = [], {}
  for i, (case, (kind, kwargs, _)) in enumerate(CASES.items()):
    params, grads = _tensors(i)
    np.savez(tmp / f"p{i}.npz", **params)
    np.savez(tmp / f"g{i}.npz", **grads)
    kwargs = dict(kwargs, learning_rate=LR, lr_schedule=POINTS)  # Adam's defaults: b 0.9 / 0.999, eps 1e-6
    jobs.append({kind: {"kwargs": kwargs, "params": str(tmp / f"p{i}.npz"), "grads": str(tmp / f"g{i}.npz")}})
    inputs[case] = (params, grads)
  results = bert4keras_ref.run(jobs, tmp)
  return {case: (*inputs[case], r) for case, r in zip(CASES, results)}


@pytest.mark.parametrize("case", CASES)
def test_matches_bert4keras(reference, case):
  """Every step's update equals bert4keras' within 1e-4 of the step's largest update (float32 norms over
  differently ordered sums) plus 2 ulp of the parameters."""
  params, grads, ref = reference[case]
  kind, _, ours_kwargs = CASES[case]
  tx = optim.make_optimizer(kind, optim.make_schedule(LR, 0, 100, "piecewise", points=POINTS), eps=1e-6,
                            **ours_kwargs)
  p = jax.tree.map(jnp.asarray, params)
  state = tx.init(p)
  update = jax.jit(tx.update)
  for t in range(STEPS):
    u, state = update({n: jnp.asarray(g[t]) for n, g in grads.items()}, state, p)
    new = optax.apply_updates(p, u)
    for n in params:
      ours, theirs = np.asarray(new[n] - p[n]), ref[n][t + 1] - ref[n][t]
      tol = 1e-4 * np.abs(theirs).max() + 2 * np.spacing(np.abs(ref[n][t:t + 2]).max())
      assert np.abs(ours - theirs).max() <= tol, (case, n, t, np.abs(ours - theirs).max(), tol)
    p = new
  assert np.abs(ref["bias"][-1]).max() > 0  # the zero-norm tensor moved (trust ratio 1), so it was compared


def test_recipe_config_builds_uncorrected_lamb():
  """pretrain/configs/roformer_v2_*.py (train_mlm.py's bias_correction=False) reach the uncorrected LAMB."""
  from pretrain.configs import roformer_v2_base
  cfg = roformer_v2_base.get_config().optimizer
  assert cfg.name == "lamb" and cfg.bias_correction is False and cfg.weight_decay == 0.01 and not cfg.decay_exclude
  tx, schedule = optim.from_config(cfg, 1000)
  params, grads = _tensors(0)
  ref = optim.make_optimizer("lamb", schedule, eps=1e-6, weight_decay=0.01, bias_correction=False)
  corrected = optim.make_optimizer("lamb", schedule, eps=1e-6, weight_decay=0.01)
  s, s_ref, s_c = tx.init(params), ref.init(params), corrected.init(params)
  for t in range(2):
    g = {n: v[t] for n, v in grads.items()}
    u, s = tx.update(g, s, params)
    u_ref, s_ref = ref.update(g, s_ref, params)
    u_c, s_c = corrected.update(g, s_c, params)
  np.testing.assert_array_equal(np.asarray(u["bias"]), np.asarray(u_ref["bias"]))
  assert not np.allclose(np.asarray(u["bias"]), np.asarray(u_c["bias"]))


def test_piecewise_schedule_refuses_a_warmup_it_would_ignore():
  from roformer_jax.config import ConfigError
  with pytest.raises(ConfigError, match=r"config.optimizer.warmup_steps \(100\) has no effect with decay='piecewise'"):
    optim.make_schedule(1.0, 100, 1000, "piecewise", points={"10": 1.0})


POINTS_CASES = [{"10": 1.0, "30": 0.5, "50": 0.1}, {"0": 1.0}, {"0": 0.5, "10": 1.0}, {"5": 1.0, "5000": 0.2},
                {"4000": 1.0, "40000": 0.5, "160000": 0.1}]


def test_piecewise_schedule_matches_bert4keras(tmp_path):
  """make_schedule('piecewise') is bert4keras' piecewise_linear(iterations, lr_schedule) at and between the
  knots, with or without a knot at step 0 (the multiplier extend_with_piecewise_linear_lr applies at each step).
  All cases in one bert4keras process (TensorFlow takes seconds to start)."""
  cases = []
  for points in POINTS_CASES:
    last = max(int(s) for s in points)
    cases.append((points, sorted({*range(min(last + 10, 60)), max(last - 1, 0), last, last + 1,
                                  *(int(s) for s in points)})))
  refs = bert4keras_ref.run([{"piecewise": {"schedule": p, "steps": steps}} for p, steps in cases], tmp_path)
  for (points, steps), ref in zip(cases, refs):
    ours = optim.make_schedule(1.0, 0, 100, "piecewise", points=points)
    np.testing.assert_allclose(np.asarray(ours(jnp.asarray(steps))), ref, rtol=1e-6, atol=1e-7, err_msg=str(points))
