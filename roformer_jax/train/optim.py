"""Optimiser factory: LAMB (the RoFormerV2 recipe) or AdamW, warm-up + decay, decay masks, clipping.

Gradient accumulation is not here: the train step accumulates token-weighted sums across
micro-batches itself, so the loss is normalised by the masked tokens of the whole global batch.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import optax

from roformer_jax.config import ConfigError


def make_schedule(learning_rate: float, warmup_steps: int, total_steps: int, decay: str = "linear",
                  end_factor: float = 0.0, points: Mapping[int, float] | None = None) -> optax.Schedule:
  """Linear warm-up from 0, then `decay` of the peak: constant, linear or cosine to end_factor * lr,
  or piecewise-linear through `points` {step: factor} (bert4keras' `lr_schedule`, which starts at 0 unless
  it names step 0)."""
  if decay == "piecewise":
    if not points:
      raise ConfigError("config.optimizer.decay='piecewise' needs config.optimizer.points {step: factor}")
    if warmup_steps:  # it would be silently ignored: the points are the whole schedule, warm-up included
      raise ConfigError(f"config.optimizer.warmup_steps ({warmup_steps}) has no effect with decay='piecewise': "
                        "config.optimizer.points give the warm-up too; set it to 0")
    knots = sorted((int(s), float(f)) for s, f in points.items())
    if knots[0][0] != 0:  # bert4keras' piecewise_linear(from_zero=True) adds (0, 0) only then
      knots = [(0, 0.0)] + knots
    steps = jnp.array([s for s, _ in knots], jnp.float32)
    factors = jnp.array([f for _, f in knots], jnp.float32)
    return lambda step: learning_rate * jnp.interp(jnp.asarray(step, jnp.float32), steps, factors)
  if total_steps <= warmup_steps and decay != "constant":
    raise ConfigError(f"the run's {total_steps} steps (config.steps, or config.epochs) must exceed "
                      f"config.optimizer.warmup_steps ({warmup_steps})")
  warm = optax.linear_schedule(0.0, learning_rate, max(warmup_steps, 1))
  rest = max(total_steps - warmup_steps, 1)
  if decay == "constant":
    after = optax.constant_schedule(learning_rate)
  elif decay == "linear":
    after = optax.linear_schedule(learning_rate, learning_rate * end_factor, rest)
  elif decay == "cosine":
    after = optax.cosine_decay_schedule(learning_rate, rest, alpha=end_factor)
  else:
    raise ConfigError(f"config.optimizer.decay: unknown schedule {decay!r}; "
                      "expected constant, linear, cosine or piecewise")
  return optax.join_schedules([warm, after], [warmup_steps])


def decay_mask(params: Any, exclude: Sequence[str]) -> Any:
  """True where weight decay applies: every leaf whose '/'-joined path matches no `exclude` regex."""
  patterns = [re.compile(p) for p in exclude]

  def keep(path, _):
    name = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
    return not any(p.search(name) for p in patterns)

  return jax.tree_util.tree_map_with_path(keep, params)


def scale_by_adam_uncorrected(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
  """m / (sqrt(v) + eps) of the raw moving averages: bert4keras `Adam(bias_correction=False)`, the RoFormerV2
  recipe's. optax.scale_by_adam always divides by 1 - b^t; its state type is kept, so checkpoints are alike."""

  def init_fn(params):
    return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=jax.tree.map(jnp.zeros_like, params),
                                  nu=jax.tree.map(jnp.zeros_like, params))

  def update_fn(updates, state, params=None):
    del params
    mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, updates)
    nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * jnp.square(g), state.nu, updates)
    out = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu, nu)
    return out, optax.ScaleByAdamState(count=optax.safe_increment(state.count), mu=mu, nu=nu)

  return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(name: str, schedule: optax.Schedule, *, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-6,
                   weight_decay: float = 0.01, decay_exclude: Sequence[str] = (),
                   clip_norm: float = 0.0, min_dim_size_to_factor: int = 10**6,
                   accum_steps: int = 1, bias_correction: bool = True) -> optax.GradientTransformation:
  """LAMB, AdamW or AdaFactor (bert4keras's, the CLUE baselines'; `roformer_jax.train.adafactor`) with optional
  global-norm clipping; decay (LAMB, AdamW) is masked by `decay_exclude` regexes; bias_correction=False gives
  LAMB and AdamW bert4keras's uncorrected Adam moments. AdaFactor takes b1 as its momentum (0 for none), no weight
  decay, and the train step's accum_steps (its decay clock counts micro-batches, as bert4keras's gradient
  accumulation does)."""
  mask = (lambda p: decay_mask(p, decay_exclude)) if decay_exclude else None
  if name == "adafactor":
    from roformer_jax.train import adafactor
    tx = adafactor.adafactor(schedule, beta1=b1, min_dim_size_to_factor=min_dim_size_to_factor,
                            accum_steps=accum_steps)
  elif name in ("lamb", "adamw") and not bias_correction:  # optax.lamb / adamw with the moments uncorrected
    tx = optax.chain(scale_by_adam_uncorrected(b1, b2, eps), optax.add_decayed_weights(weight_decay, mask),
                     *([optax.scale_by_trust_ratio()] if name == "lamb" else []),
                     optax.scale_by_learning_rate(schedule))
  elif name == "lamb":
    tx = optax.lamb(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=mask)
  elif name == "adamw":
    tx = optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=mask)
  else:
    raise ConfigError(f"config.optimizer.name: unknown optimiser {name!r}; expected 'lamb', 'adamw' or 'adafactor'")
  if clip_norm and clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(clip_norm), tx)
  return tx


def from_config(cfg: Any, total_steps: int,
                accum_steps: int = 1) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(optimiser, schedule) from an `optimizer` ConfigDict section (and the run's config.accum_steps)."""
  schedule = make_schedule(cfg.learning_rate, cfg.warmup_steps, total_steps, cfg.decay, cfg.get("end_factor", 0.0),
                           cfg.get("points", None))
  tx = make_optimizer(cfg.name, schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                      decay_exclude=tuple(cfg.get("decay_exclude", ())), clip_norm=cfg.get("clip_norm", 0.0),
                      min_dim_size_to_factor=cfg.get("min_dim_size_to_factor", 10**6), accum_steps=accum_steps,
                      bias_correction=cfg.get("bias_correction", True))
  return tx, schedule
