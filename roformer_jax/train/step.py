"""The train state, its sharded initialisation, and the one jitted train step (loss function passed in).

Pretraining and fine-tuning share all of this: each supplies a loss function
`loss_fn(params, batch, rng, step) -> (loss_sum, stats)` that returns *sums* over its examples
(`stats["weight"]` is the count the loss is normalised by, e.g. masked tokens). The step
accumulates sums over micro-batches and divides once, so the loss is normalised by the whole
global batch across accumulation steps.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding

from roformer_jax.train import sharding as sharding_lib

LossFn = Callable[[Any, dict, jax.Array, jax.Array], tuple[jax.Array, dict]]


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array  # raw uint32[2] key: every step folds its step number in


def abstract_state(init_params: Callable[[jax.Array], Any], tx: optax.GradientTransformation, mesh: Mesh,
                   rules=sharding_lib.LOGICAL_RULES) -> tuple[TrainState, TrainState]:
  """(abstract state with shardings, state shardings) without allocating anything.

  `init_params(rng)` returns *boxed* params (`nn.Partitioned` leaves carrying logical names).
  The optimiser state copies each parameter's sharding; its scalars are replicated.
  """
  boxed = jax.eval_shape(init_params, jax.random.PRNGKey(0))
  params = nn.meta.unbox(boxed)
  param_shardings = sharding_lib.fit_to_shapes(
      sharding_lib.logical_to_sharding(nn.get_partition_spec(boxed), mesh, rules), params)
  opt_state = jax.eval_shape(tx.init, params)
  repl = sharding_lib.replicated(mesh)
  is_sharding = lambda x: isinstance(x, NamedSharding)
  opt_shardings = optax.tree_map_params(tx, lambda _, s: s, opt_state, param_shardings,
                                        transform_non_params=lambda _: repl, is_leaf=is_sharding)
  # A state leaf can have its parameter's tree position but not its rank or shape (AdaFactor keeps a [1]
  # placeholder where a moment is unused, factored rows [n, 1]): fit the sharding, replicate a lower rank.
  fit = lambda s, x: repl if len(s.spec) > x.ndim else sharding_lib.fit_to_shapes(s, x)
  opt_shardings = jax.tree_util.tree_map(fit, opt_shardings, opt_state, is_leaf=is_sharding)
  shardings = TrainState(step=repl, params=param_shardings, opt_state=opt_shardings, rng=repl)
  abstract = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params, opt_state=opt_state,
                        rng=jax.ShapeDtypeStruct((2,), jnp.uint32))
  abstract = jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                    abstract, shardings)
  return abstract, shardings


def init_state(init_params: Callable[[jax.Array], Any], tx: optax.GradientTransformation, seed: int,
               shardings: TrainState) -> TrainState:
  """Creates the state directly in its shardings (nothing is materialised on one device first)."""
  def init(rng):
    init_rng, step_rng = jax.random.split(rng)
    params = nn.meta.unbox(init_params(init_rng))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=step_rng)
  return jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(seed))


def _split_micro(batch: dict, accum_steps: int) -> dict:
  # Micro-batch i takes rows i, i+accum, ... so every device contributes equally to each one.
  def split(x):
    x = x.reshape((x.shape[0] // accum_steps, accum_steps) + x.shape[1:])
    return jnp.swapaxes(x, 0, 1)
  return jax.tree_util.tree_map(split, batch)


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation, schedule: optax.Schedule,
                    shardings: TrainState, mesh: Mesh, *, accum_steps: int = 1, skip_nonfinite: bool = False):
  """The jitted step: (state, batch) -> (state, metrics). State is donated; shardings are explicit."""

  def grads_and_stats(params, batch, rng, step):
    (loss_sum, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, rng, step)
    return grads, dict(stats, loss=loss_sum)

  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    rng = jax.random.fold_in(state.rng, state.step)
    if accum_steps == 1:
      grads, sums = grads_and_stats(state.params, batch, rng, state.step)
    else:
      micro = _split_micro(batch, accum_steps)

      def body(carry, xs):
        mb, i = xs
        g, s = grads_and_stats(state.params, mb, jax.random.fold_in(rng, i), state.step)
        return jax.tree_util.tree_map(jnp.add, carry, (g, s)), None

      zeros = jax.eval_shape(grads_and_stats, state.params, jax.tree_util.tree_map(lambda x: x[0], micro),
                             rng, state.step)
      zeros = jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), zeros)
      (grads, sums), _ = jax.lax.scan(body, zeros, (micro, jnp.arange(accum_steps)))
    weight = jnp.maximum(sums["weight"], 1.0)
    grads = jax.tree_util.tree_map(lambda g: g / weight, grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.global_norm(grads)
    metrics = {k: v / weight for k, v in sums.items() if k != "weight"}
    metrics.update(weight=sums["weight"], grad_norm=grad_norm, learning_rate=schedule(state.step))
    finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
    metrics["finite"] = finite
    new = TrainState(step=state.step + 1, params=params, opt_state=opt_state, rng=state.rng)
    if skip_nonfinite:  # keep the old params and moments; the step (and its data) still advances
      keep = lambda a, b: jax.tree_util.tree_map(lambda x, y: jnp.where(finite, x, y), a, b)
      # ... and so does the learning-rate schedule's own count, which stays equal to the step: the rate applied
      # is schedule(step), the one logged, with warm-up and decay where the config puts them.
      is_schedule = lambda x: isinstance(x, optax.ScaleByScheduleState)
      new = new.replace(params=keep(params, state.params),
                        opt_state=jax.tree_util.tree_map(lambda a, b: a if is_schedule(a) else keep(a, b), opt_state,
                                                         state.opt_state, is_leaf=is_schedule))
    return new, metrics

  # Inputs arrive already placed (the state by init/restore, the batch by sharding.global_batch);
  # the outputs are pinned so the state keeps its layout step after step.
  return jax.jit(train_step, out_shardings=(shardings, None), donate_argnums=0)

