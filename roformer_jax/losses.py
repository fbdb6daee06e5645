"""Multilabel categorical cross-entropy (kexue 7359, "ZLPR") and the GlobalPointer losses built on it.

For scores s over a class set with positives P and negatives N, threshold 0:

  L = log(1 + sum_{i in N} e^{s_i}) + log(1 + sum_{j in P} e^{-s_j});   predict class i iff s_i > 0.

`multilabel_categorical_crossentropy` (dense labels) and `sparse_multilabel_categorical_crossentropy`
(positive class indices) have bert4keras' names, signatures and results (bert4keras 0.11.5 `backend`;
tested against it), including the clip of 1 - e^{b - a} to [1e-7, 1] that fixed the NaN of
bojone/bert4keras#436 when positives dominate. All maths is float32 whatever the input dtype.

Masked score cells (a GlobalPointer's padding and lower triangle) hold `MASKED` (finite, -1e12) or
-inf; every score <= MASKED / 2 is left out of both terms, as bert4keras leaves out -inf. Masking is
done with `jnp.where` into a finite value, never by multiplying by 0 or adding -inf.

The GlobalPointer wrappers reduce as the reference scripts do:

* `global_pointer_crossentropy` (bojone/GlobalPointer NER scripts): dense labels [B, H, L, L],
  flattened to B*H rows of L*L cells, mean over rows.
* `sparse_global_pointer_crossentropy` (bojone/GPLinker `globalpointer_crossentropy`): label pairs
  [B, H, P, 2] (token i, token j), flat index i*L + j, (0, 0) = padding (`mask_zero=True`), sum over
  heads, mean over the batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

MASKED = -1e12  # the value GlobalPointer heads give masked cells
EPSILON = 1e-7  # bert4keras' K.epsilon(): the clip that keeps log(1 - e^{b - a}) finite
_NEG = jnp.float32(MASKED)


def _masked(y_pred: Array) -> Array:
  return y_pred <= MASKED / 2  # also true for -inf


def _logsumexp_with_zero(x: Array) -> Array:
  """log(1 + sum(exp(x), -1)): the appended threshold class (score 0) of the reference."""
  return jax.nn.logsumexp(jnp.concatenate([x, jnp.zeros_like(x[..., :1])], axis=-1), axis=-1)


def multilabel_categorical_crossentropy(y_true: Array, y_pred: Array) -> Array:
  """The loss per row (all axes but the last): y_true in [0, 1] (1 = positive; soft targets as
  bert4keras: log(1 - y) is added to the negative scores, log(y) to the positive ones), y_pred the
  unbounded scores (no sigmoid/softmax); masked cells (see module doc) are excluded."""
  y_true = jnp.asarray(y_true, jnp.float32)
  y_pred = jnp.asarray(y_pred, jnp.float32)
  valid = ~_masked(y_pred)
  # log(1 - y) and log(y) taken only where finite: the other branch is replaced, never multiplied.
  neg_ok, pos_ok = valid & (y_true < 1), valid & (y_true > 0)
  log_not = jnp.log(jnp.where(y_true < 1, 1 - y_true, 1.0))
  log_yes = jnp.log(jnp.where(y_true > 0, y_true, 1.0))
  y_neg = jnp.where(neg_ok, y_pred + log_not, _NEG)
  y_pos = jnp.where(pos_ok, -y_pred + log_yes, _NEG)
  return _logsumexp_with_zero(y_neg) + _logsumexp_with_zero(y_pos)


def sparse_multilabel_categorical_crossentropy(y_true: Array, y_pred: Array, mask_zero: bool = False) -> Array:
  """The loss per row from positive class indices y_true [..., P] (int; repeats count twice, as in
  bert4keras) and scores y_pred [..., C].

  With `mask_zero`, index 0 is padding: class 0 is then excluded everywhere (it must never be a
  positive; GPLinker's flat index 0 is the [CLS]-[CLS] cell). The index C means the threshold class
  (score 0), as in the reference. Equals the dense form (up to the eps clip):
    a = log(1 + sum_all e^s), b = log sum_P e^s, neg = a + log(clip(1 - e^{b - a}, eps, 1)),
    pos = log(1 + sum_P e^{-s}).
  """
  y_true = jnp.asarray(y_true, jnp.int32)
  y_pred = jnp.asarray(y_pred, jnp.float32)
  y_pred = jnp.concatenate([y_pred, jnp.zeros_like(y_pred[..., :1])], axis=-1)  # + threshold class
  num = y_pred.shape[-1]
  y_pred = jnp.where(_masked(y_pred), _NEG, y_pred)
  classes = jnp.arange(num)
  if mask_zero:
    y_pred = jnp.where(classes == 0, _NEG, y_pred)
  # Leading dims of y_true and y_pred must agree (bert4keras' batch_gather).
  gathered = jnp.take_along_axis(y_pred, jnp.clip(y_true, 0, num - 1), axis=-1)
  is_pos = (y_true != 0) if mask_zero else jnp.ones(y_true.shape, bool)
  pos_loss = _logsumexp_with_zero(jnp.where(is_pos, -gathered, _NEG))
  all_loss = jax.nn.logsumexp(y_pred, axis=-1)
  aux = jax.nn.logsumexp(jnp.where(is_pos, gathered, _NEG), axis=-1) - all_loss
  # 1 - e^{aux} as the reference computes it (not -expm1), so the clip engages at the same inputs.
  aux = jnp.clip(1 - jnp.exp(aux), EPSILON, 1)
  return pos_loss + all_loss + jnp.log(aux)


def global_pointer_crossentropy(y_true: Array, y_pred: Array) -> Array:
  """NER loss of bojone/GlobalPointer: dense labels y_true [B, H, L, L] (1 at (type, start, end)),
  scores y_pred [B, H, L, L]; the mean over the B*H (example, type) rows of the loss over L*L cells."""
  if y_true.shape != y_pred.shape:
    raise ValueError(f"global_pointer_crossentropy: labels {y_true.shape} and scores {y_pred.shape} differ")
  rows = y_pred.shape[0] * y_pred.shape[1]
  return jnp.mean(multilabel_categorical_crossentropy(y_true.reshape(rows, -1), y_pred.reshape(rows, -1)))


def sparse_global_pointer_rows(y_true: Array, y_pred: Array) -> Array:
  """The per-example form of `sparse_global_pointer_crossentropy`: [B], the loss summed over heads."""
  b, h, length = y_pred.shape[0], y_pred.shape[1], y_pred.shape[2]
  if y_true.ndim != 4 or y_true.shape[:2] != (b, h) or y_true.shape[-1] != 2:
    raise ValueError(f"sparse_global_pointer_crossentropy: labels {y_true.shape} must be [{b}, {h}, P, 2] "
                     f"for scores {y_pred.shape}")
  y_true = jnp.asarray(y_true, jnp.int32)
  flat = y_true[..., 0] * length + y_true[..., 1]
  loss = sparse_multilabel_categorical_crossentropy(flat, y_pred.reshape(b, h, -1), mask_zero=True)
  return jnp.sum(loss, axis=1)


def sparse_global_pointer_crossentropy(y_true: Array, y_pred: Array) -> Array:
  """GPLinker's loss (bojone/GPLinker `globalpointer_crossentropy`): label pairs y_true [B, H, P, 2]
  (token i, token j) with (0, 0) as padding / "no label", scores y_pred [B, H, L, L]; the loss over
  the L*L cells per (example, head), summed over heads, mean over the batch."""
  return jnp.mean(sparse_global_pointer_rows(y_true, y_pred))


def global_pointer_f1(y_true: Array, y_pred: Array) -> Array:
  """The reference's train-time proxy metric 2 sum(y * yhat) / sum(y + yhat), yhat = [score > 0], on
  dense labels (cell level, not entity level)."""
  y_true = jnp.asarray(y_true, jnp.float32)
  y_hat = (jnp.asarray(y_pred, jnp.float32) > 0).astype(jnp.float32)
  return 2 * jnp.sum(y_true * y_hat) / jnp.sum(y_true + y_hat)


def gplinker_crossentropy(labels: tuple[Array, ...], scores: tuple[Array, ...]) -> Array:
  """GPLinker's training loss: `sparse_global_pointer_crossentropy` of each of the three heads (entity or
  argument, head, tail), summed with equal weights (the reference's Keras multi-output loss)."""
  if len(labels) != len(scores):
    raise ValueError(f"gplinker_crossentropy: {len(labels)} label arrays for {len(scores)} score arrays")
  return jnp.mean(gplinker_rows(labels, scores))


def gplinker_rows(labels: tuple[Array, ...], scores: tuple[Array, ...]) -> Array:
  """`gplinker_crossentropy` per example [B] (its mean over the batch is the reference's loss): a train loop
  sums it with example weights."""
  if len(labels) != len(scores):
    raise ValueError(f"gplinker_crossentropy: {len(labels)} label arrays for {len(scores)} score arrays")
  return sum(sparse_global_pointer_rows(y, s) for y, s in zip(labels, scores))
