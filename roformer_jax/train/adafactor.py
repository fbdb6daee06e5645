"""bert4keras' AdaFactor (the CLUE baselines' optimiser) as an optax chain, and how `optax.adafactor` differs.

bert4keras `AdaFactorV2._resource_apply_dense` (v0.11.5), per parameter tensor p with gradient g, step
t = 1, 2, ...:

  beta2 = 1 - t^-0.8                        (or a fixed `beta2`)
  v     = beta2 * v + (1 - beta2) * (g^2 + eps1)       [factored: row/col means, v = vr * vc / mean(vr)]
  u     = g / sqrt(v + eps1)
  u     = u / max(1, rms(u) / clipping_threshold)
  m     = beta1 * m + (1 - beta1) * u       (if beta1 > 0; no bias correction)
  u     = m * max(rms(p), eps2)             (if multiply_by_parameter_scale)
  p     = p - lr * u

`adafactor` below is exactly this, built from optax transforms; `scale_by_factored_rms` is ours because
of the second eps1. The CLUE recipe (CLUE-bert4keras `snippets.py`) is `adafactor(5e-4, beta1=0.9,
min_dim_size_to_factor=10**6)`: every tensor keeps a full second moment.

Where `optax.adafactor(learning_rate, min_dim_size_to_factor=10**6, decay_rate=0.8, clipping_threshold=1.0,
momentum=0.9, multiply_by_parameter_scale=True, eps=1e-30)` differs (optax 0.2.8, `_src/alias.py` and
`_src/factorized.py`):

* Order of momentum and parameter scaling. optax chains clip -> x lr -> x max(rms(p), 1e-3) -> EMA(momentum)
  -> negate, so its momentum averages updates already scaled by the learning rate and by the parameter RMS
  *of their own step*; bert4keras averages the unscaled clipped updates and scales the average by the
  *current* RMS and lr. The first step is identical; at step t the two differ by
  lr * sum_k beta1^k (1 - beta1) u_{t-k} (s_t - s_{t-k}), s = max(rms(p), 1e-3) (plus the lr change
  under a schedule). tests/test_adafactor.py pins this at step 2.
* Epsilon. Both add eps1 to g^2 in the second moment; bert4keras adds it again inside the square root,
  optax does not. Visible only where g^2 is ~1e-29 or smaller (with eps1 = 1e-30 the first update of a
  gradient 1e-15 is 1/sqrt(3e-30) * 1e-15 here, 1/sqrt(2e-30) * 1e-15 in optax).
* Clipping: the same (per-tensor update RMS <= threshold, before momentum, after the 1/sqrt(v) scaling).
* Decay rate: the same, beta2 = 1 - t^-0.8 with t the 1-based step (optax's `decay_offset` shifts t;
  bert4keras alternatively takes a fixed beta2).
* Factoring threshold: the same rule (factor when the second-largest dimension >= min_dim_size_to_factor,
  default 128 in both; the CLUE recipe's 10**6 turns it off). When dimensions tie, optax picks axes by
  argsort, bert4keras by argpartition; for 2-D tensors the result is the same either way.
* Parameter-scale floor: both max(rms(p), 1e-3) (bert4keras `epsilon2`, fixed in optax); bert4keras can
  exclude parameters by name (`exclude_from_parameter_scale`), optax cannot.
* Momentum buffers: float32 in optax (`dtype_momentum`), the parameter's dtype in bert4keras and here.
* learning_rate=None: bert4keras then uses min(1/sqrt(t), 0.01) (x0.05 without parameter scaling); optax
  applies no learning rate. Here a learning rate is required.
* Gradient accumulation (bert4keras `optimizer2`/`optimizer4` = `extend_with_gradient_accumulation(AdaFactor)`,
  used by C3, CHID and CMRC2018) is the train step's job here: it hands the optimiser the batch's mean gradient.
  bert4keras's wrapper calls AdaFactor on every micro-batch and keeps only every n-th call's result (the first,
  at iteration 0, on a zero gradient), so its t counts micro-batches: update k has t = n * k + 1. `accum_steps`
  = n gives that decay, and starts v at the eps1 that first call leaves.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax


class FactoredRmsState(NamedTuple):
  count: jax.Array  # steps taken
  v: optax.Params  # full second moment ([1] placeholder where factored)
  v_row: optax.Params  # factored: mean over the largest axis (keepdims); [1] placeholder otherwise
  v_col: optax.Params  # factored: mean over the second-largest axis (keepdims)


@dataclasses.dataclass
class _Leaf:
  """One tensor's results; a plain class, so jax.tree.map does not descend into it."""
  u: Any
  v: Any
  v_row: Any
  v_col: Any


def factored_axes(shape: tuple[int, ...], min_dim_size_to_factor: int) -> Optional[tuple[int, int]]:
  """(largest axis, second-largest axis) when the second moment is factored, else None (bert4keras'
  `factored_shape`: np.argpartition, so ties resolve as there)."""
  if len(shape) < 2:
    return None
  order = np.array(shape).argpartition(-2)
  if shape[order[-2]] < min_dim_size_to_factor:
    return None
  return int(order[-1]), int(order[-2])


def scale_by_factored_rms(beta2: Optional[float] = None, decay_exponent: float = 0.8, epsilon1: float = 1e-30,
                          min_dim_size_to_factor: int = 128, accum_steps: int = 1) -> optax.GradientTransformation:
  """u = g / sqrt(v + eps1) with v the (factored) moving average of g^2 + eps1, as bert4keras' AdaFactor.

  beta2=None: the decay 1 - t^-decay_exponent of the 1-based step t; a float: that fixed decay.
  accum_steps > 1: t as bert4keras's gradient-accumulation wrapper counts it, accum_steps * step + 1, and the
  moments start where its zero-gradient first call leaves them.
  """
  # The wrapper's call at iteration 0 (t = 1) averages g^2 + eps1 = eps1 into v.
  v0 = 0.0 if accum_steps <= 1 else epsilon1 * (1.0 if beta2 is None else 1.0 - beta2)

  def init_fn(params):
    def full(p):
      unused = factored_axes(p.shape, min_dim_size_to_factor) is not None
      return jnp.full((1,) if unused else p.shape, v0, p.dtype)

    def reduced(p, which):
      axes = factored_axes(p.shape, min_dim_size_to_factor)
      if axes is None:
        return jnp.full((1,), v0, p.dtype)
      shape = list(p.shape)
      shape[axes[which]] = 1
      return jnp.full(shape, v0, p.dtype)

    return FactoredRmsState(jnp.zeros([], jnp.int32), jax.tree.map(full, params),
                            jax.tree.map(lambda p: reduced(p, 0), params),
                            jax.tree.map(lambda p: reduced(p, 1), params))

  def update_fn(updates, state, params=None):
    del params
    t = (state.count + 1).astype(jnp.float32)
    if accum_steps > 1:  # the wrapper's iterations count micro-batches, from a zero-gradient call at 0
      t = accum_steps * t + 1
    decay = 1.0 - t ** -decay_exponent if beta2 is None else jnp.asarray(beta2, jnp.float32)

    def one(g, v, vr, vc):
      g2 = jnp.square(g) + epsilon1
      d = decay.astype(g.dtype)
      axes = factored_axes(g.shape, min_dim_size_to_factor)
      if axes is None:
        v = d * v + (1 - d) * g2
        return _Leaf(g / jnp.sqrt(v + epsilon1), v, vr, vc)
      big, small = axes
      vr = d * vr + (1 - d) * jnp.mean(g2, axis=big, keepdims=True)
      vc = d * vc + (1 - d) * jnp.mean(g2, axis=small, keepdims=True)
      full = vr * vc / jnp.mean(vr, axis=small, keepdims=True)
      return _Leaf(g / jnp.sqrt(full + epsilon1), v, vr, vc)

    out = jax.tree.map(one, updates, state.v, state.v_row, state.v_col)
    pick = lambda name: jax.tree.map(lambda leaf: getattr(leaf, name), out)
    return pick("u"), FactoredRmsState(optax.safe_increment(state.count), pick("v"), pick("v_row"), pick("v_col"))

  return optax.GradientTransformation(init_fn, update_fn)


def adafactor(learning_rate: optax.ScalarOrSchedule, *, beta1: float = 0.0, beta2: Optional[float] = None,
              decay_exponent: float = 0.8, epsilon1: float = 1e-30, epsilon2: float = 1e-3,
              multiply_by_parameter_scale: bool = True, clipping_threshold: Optional[float] = 1.0,
              min_dim_size_to_factor: int = 128, accum_steps: int = 1) -> optax.GradientTransformation:
  """bert4keras' `AdaFactor` (same arguments and defaults; see the module docstring) as an optax chain;
  accum_steps > 1: `extend_with_gradient_accumulation(AdaFactor)(grad_accum_steps=accum_steps)` fed the mean of
  the micro-batches' gradients once per update."""
  chain = [scale_by_factored_rms(beta2, decay_exponent, epsilon1, min_dim_size_to_factor, accum_steps)]
  if clipping_threshold is not None:
    chain.append(optax.clip_by_block_rms(clipping_threshold))
  if beta1 > 0.0:
    chain.append(optax.ema(beta1, debias=False))
  if multiply_by_parameter_scale:
    chain.append(optax.scale_by_param_block_rms(epsilon2))
  chain.append(optax.scale_by_learning_rate(learning_rate))
  return optax.chain(*chain)


def clue_adafactor(learning_rate: optax.ScalarOrSchedule = 5e-4, accum_steps: int = 1) -> optax.GradientTransformation:
  """The CLUE baselines' optimiser: `AdaFactor(learning_rate=5e-4, beta1=0.9, min_dim_size_to_factor=10**6)`
  (accum_steps 2 or 4: their `optimizer2` / `optimizer4`)."""
  return adafactor(learning_rate, beta1=0.9, min_dim_size_to_factor=10**6, accum_steps=accum_steps)
