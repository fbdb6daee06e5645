"""The extraction heads, losses and token <-> char mapping against bert4keras itself.

GlobalPointer / EfficientGlobalPointer scores, the multilabel losses (and their gradients), the reference
scripts' loss wrappers, and the scripts' start/end token maps (`Tokenizer.rematch`) against
`spans.CharMap`. One bert4keras process (tests/bert4keras_extraction.py) computes every reference value;
tolerances are float32 round-off: 1e-5 relative + 1e-5 absolute on scores, losses and gradients (the
two compute the same float32 formulas in a different order); the token maps are equal.
"""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bert4keras_extraction
from roformer_jax import heads, losses, tokenization
from roformer_jax.extraction import spans

TOL = dict(rtol=1e-5, atol=1e-5)
LAYER_SWITCHES = list(itertools.product([True, False], [True, False], [True, False]))  # rope, tril, bias
B, L, D, H, HEAD = 2, 7, 16, 3, 8
LENGTHS = (5, 7)  # the first example is padded
REMATCH_TEXTS = ["2008年，iPhone 12在北京发布。", "Ｆｕｌｌ　width ＡＢＣ１２３ 与 Café!", "  前后  有空格 和 罕见字  ",
                 "这是一个被截断的很长的句子，后面的实体不在了：北京。", "a-b_c (d) [e] 1.5%"]
REMATCH_MAXLEN = 16


def _mask():
  return np.arange(L)[None, :] < np.asarray(LENGTHS)[:, None]


def _dense_case(rng):
  """Scores [rows, C] with masked cells (-inf), labels covering: no positive, a positive-dominated
  row (many positives with large scores), a mixed row, soft labels."""
  rows, c = 6, 12
  y_pred = rng.normal(0, 3, (rows, c)).astype(np.float32)
  y_pred[:, -3:] = -np.inf  # masked cells (a head's padding)
  y_true = np.zeros((rows, c), np.float32)
  y_true[1, :8] = 1
  y_pred[1, :8] = rng.uniform(20, 40, 8)  # positives dominate
  y_true[2, [0, 4]] = 1
  y_true[3, 1] = 1
  y_pred[3, 1] = -30.0  # a badly missed positive
  y_true[4] = rng.uniform(0, 1, c).round(1)  # soft targets (0, 1 and in between)
  y_true[5, 2] = 1
  y_pred[5] = rng.uniform(20, 40, c)  # everything high, one positive
  y_true[:, -3:] = 0
  return y_true, y_pred


def _sparse_case(rng, mask_zero):
  b, h, c, p = 3, 4, 20, 5
  y_pred = rng.normal(0, 3, (b, h, c)).astype(np.float32)
  y_pred[..., -2:] = -np.inf
  y_true = np.zeros((b, h, p), np.int32)
  lo = 1 if mask_zero else 0
  y_true[0, 0] = [3, 5, 7, 0, 0] if mask_zero else [3, 5, 7, 7, 7]  # padding (or repeats)
  y_true[0, 1] = 0 if mask_zero else [1, 1, 1, 1, 1]  # no positive (mask_zero) / one, repeated
  y_true[1, 0] = [1, 2, 3, 4, 6]
  y_pred[1, 0, [1, 2, 3, 4, 6]] = rng.uniform(25, 40, 5)  # positives dominate: 1 - e^{b-a} -> 0, the clip
  y_true[1, 1] = [2, 2, 9, 0, 0] if mask_zero else [2, 2, 9, 9, 9]
  y_true[2] = rng.integers(lo, c - 2, (h, p))
  y_true[2, 3] = c  # the threshold class, as the reference allows
  return y_true, y_pred


def _gp_weights(rng, layer, use_bias):
  """Keras-layout weights (the order `set_weights` wants) and the same as Flax params."""
  d2 = 2 * HEAD
  if layer == "GlobalPointer":
    kernel = rng.normal(0, 0.3, (D, H * d2)).astype(np.float32)
    bias = rng.normal(0, 0.3, (H * d2,)).astype(np.float32)
    keras = [kernel] + ([bias] if use_bias else [])
    flax = {"dense": {"kernel": kernel.reshape(D, H, 2, HEAD)}}
    if use_bias:
      flax["dense"]["bias"] = bias.reshape(H, 2, HEAD)
    return keras, flax
  p_kernel = rng.normal(0, 0.3, (D, d2)).astype(np.float32)
  p_bias = rng.normal(0, 0.3, (d2,)).astype(np.float32)
  q_kernel = rng.normal(0, 0.3, (d2, 2 * H)).astype(np.float32)
  q_bias = rng.normal(0, 0.3, (2 * H,)).astype(np.float32)
  if use_bias:
    keras = [p_kernel, p_bias, q_kernel, q_bias]
    flax = {"p_dense": {"kernel": p_kernel, "bias": p_bias},
            "q_dense": {"kernel": q_kernel.reshape(d2, H, 2), "bias": q_bias.reshape(H, 2)}}
  else:
    keras = [p_kernel, q_kernel]
    flax = {"p_dense": {"kernel": p_kernel}, "q_dense": {"kernel": q_kernel.reshape(d2, H, 2)}}
  return keras, flax


def _module(layer, rope, tril, bias, **kw):
  cls = heads.GlobalPointer if layer == "GlobalPointer" else heads.EfficientGlobalPointer
  return cls(heads=H, head_size=HEAD, rope=rope, tril_mask=tril, use_bias=bias, **kw)


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
  rng = np.random.default_rng(0)
  jobs, ours = [], []
  y_true, y_pred = _dense_case(rng)
  jobs.append(dict(kind="mce", y_true=y_true, y_pred=y_pred))
  ours.append(("mce", y_true, y_pred, None))
  for mask_zero in (False, True):
    y_true, y_pred = _sparse_case(rng, mask_zero)
    jobs.append(dict(kind="sparse_mce", y_true=y_true, y_pred=y_pred, mask_zero=mask_zero))
    ours.append(("sparse_mce", y_true, y_pred, mask_zero))
  x = rng.normal(0, 1, (B, L, D)).astype(np.float32)
  mask = _mask()
  for layer in ("GlobalPointer", "EfficientGlobalPointer"):
    for rope, tril, bias in LAYER_SWITCHES:
      keras_w, flax_w = _gp_weights(rng, layer, bias)
      names = [f"w{i}" for i in range(len(keras_w))]
      jobs.append(dict(kind="layer", layer=layer, weights=names, x=x, mask=mask.astype(np.int32),
                       kwargs=dict(heads=H, head_size=HEAD, RoPE=rope, tril_mask=tril, use_bias=bias),
                       **dict(zip(names, keras_w))))
      ours.append(("layer", (layer, rope, tril, bias), x, flax_w))
  # The reference scripts' loss wrappers on GlobalPointer-shaped scores (-inf in masked cells).
  scores = rng.normal(0, 2, (B, H, L, L)).astype(np.float32)
  valid = mask[:, None, :, None] & mask[:, None, None, :] & np.triu(np.ones((L, L), bool))
  scores = np.where(valid, scores, -np.inf).astype(np.float32)
  dense = np.zeros((B, H, L, L), np.float32)
  dense[0, 0, 1, 2] = dense[0, 2, 3, 3] = dense[1, 1, 1, 6] = dense[1, 1, 2, 4] = 1
  jobs.append(dict(kind="ner_loss", y_true=dense, y_pred=scores))
  ours.append(("ner_loss", dense, scores, None))
  pairs = np.zeros((B, H, 3, 2), np.int32)  # (0, 0) = padding / no label
  pairs[0, 0, :2] = [[1, 2], [3, 3]]
  pairs[1, 1, :3] = [[1, 6], [2, 4], [5, 6]]
  pairs[1, 2, 0] = [4, 4]
  jobs.append(dict(kind="gplinker_loss", y_true=pairs, y_pred=scores))
  ours.append(("gplinker_loss", pairs, scores, None))
  root = tmp_path_factory.mktemp("vocab")
  vocab = [t for t in tokenization.build_char_vocab(REMATCH_TEXTS, extra_words=["iphone"]) if t != "罕"]
  tokenization.write_vocab(vocab, root / "vocab.txt")
  jobs.append(dict(kind="rematch", vocab=str(root / "vocab.txt"), texts=REMATCH_TEXTS, maxlen=REMATCH_MAXLEN))
  ours.append(("rematch", root / "vocab.txt", None, None))
  return list(zip(ours, bert4keras_extraction.run(jobs, tmp_path_factory.mktemp("b4k"))))


def _finite(a):
  """-inf (bert4keras' masking) as our finite MASKED."""
  return np.where(np.isneginf(a), losses.MASKED, a).astype(np.float32)


def test_dense_multilabel_crossentropy_matches_bert4keras(cases):
  (_, y_true, y_pred, _), ref = cases[0]
  for scores in (y_pred, _finite(y_pred)):  # -inf or our finite mask value: the same loss
    ours = losses.multilabel_categorical_crossentropy(y_true, scores)
    np.testing.assert_allclose(ours, ref["loss"], **TOL)
  grad = jax.grad(lambda s: losses.multilabel_categorical_crossentropy(y_true, s).sum())(_finite(y_pred))
  np.testing.assert_allclose(grad, np.nan_to_num(ref["grad"]), **TOL)
  assert np.isfinite(ref["loss"]).all()


@pytest.mark.parametrize("index", [1, 2], ids=["mask_zero=False", "mask_zero=True"])
def test_sparse_multilabel_crossentropy_matches_bert4keras(cases, index):
  (_, y_true, y_pred, mask_zero), ref = cases[index]
  ours = losses.sparse_multilabel_categorical_crossentropy(y_true, _finite(y_pred), mask_zero)
  np.testing.assert_allclose(ours, ref["loss"], **TOL)
  grad = jax.grad(lambda s: losses.sparse_multilabel_categorical_crossentropy(y_true, s, mask_zero).sum())
  np.testing.assert_allclose(grad(_finite(y_pred)), np.nan_to_num(ref["grad"]), **TOL)
  assert np.isfinite(np.asarray(ours)).all()
  # The positive-dominated row hits the eps clip: log(1e-7) below the row's log-sum-exp.
  clipped = losses.sparse_multilabel_categorical_crossentropy(y_true[1, 0], _finite(y_pred[1, 0]), mask_zero)
  all_lse = np.log(1 + np.exp(np.float64(y_pred[1, 0][np.isfinite(y_pred[1, 0])])).sum())
  pos = np.log1p(np.exp(-np.float64(y_pred[1, 0, y_true[1, 0]])).sum())
  np.testing.assert_allclose(clipped, pos + all_lse + np.log(losses.EPSILON), rtol=1e-5)


def test_sparse_equals_dense_form():
  """Away from the clip the two forms are one loss (kexue 8888); class 0 excluded under mask_zero."""
  rng = np.random.default_rng(1)
  y_pred = rng.normal(0, 2, (50, 30)).astype(np.float32)
  idx = np.stack([rng.choice(np.arange(1, 30), 4, replace=False) for _ in range(50)])
  dense = np.zeros_like(y_pred)
  np.put_along_axis(dense, idx, 1, axis=1)
  sparse = losses.sparse_multilabel_categorical_crossentropy(idx, y_pred, mask_zero=False)
  np.testing.assert_allclose(sparse, losses.multilabel_categorical_crossentropy(dense, y_pred), rtol=1e-5)
  padded = np.concatenate([idx, np.zeros((50, 3), np.int64)], axis=1)
  masked = losses.sparse_multilabel_categorical_crossentropy(padded, y_pred, mask_zero=True)
  without0 = losses.multilabel_categorical_crossentropy(dense[:, 1:], y_pred[:, 1:])
  np.testing.assert_allclose(masked, without0, rtol=1e-5)


@pytest.mark.parametrize("index", list(range(3, 3 + 2 * len(LAYER_SWITCHES))))
def test_heads_match_bert4keras_layers(cases, index):
  (_, (layer, rope, tril, bias), x, params), ref = cases[index]
  module = _module(layer, rope, tril, bias)
  mask = _mask()
  ours = np.asarray(module.apply({"params": params}, jnp.asarray(x), jnp.asarray(mask)))
  want = ref["scores"]
  assert ours.dtype == np.float32 and np.isfinite(ours).all()
  np.testing.assert_array_equal(np.isneginf(want), ours == losses.MASKED)  # the same cells masked
  valid = np.isfinite(want)
  assert valid.sum() > 0.3 * want.size
  np.testing.assert_allclose(ours[valid], want[valid], **TOL)
  # The masks: padding rows/columns of the first example, and the lower triangle only with tril_mask.
  assert (ours[0, :, LENGTHS[0]:, :] == losses.MASKED).all() and (ours[0, :, :, LENGTHS[0]:] == losses.MASKED).all()
  below = np.tril(np.ones((L, L), bool), -1)
  assert (ours[1][:, below] == losses.MASKED).all() == tril


@pytest.mark.parametrize("index,fn", [(-3, "global_pointer_crossentropy"),
                                      (-2, "sparse_global_pointer_crossentropy")])
def test_loss_wrappers_match_reference_scripts(cases, index, fn):
  (_, y_true, scores, _), ref = cases[index]
  ours = getattr(losses, fn)(jnp.asarray(y_true), jnp.asarray(_finite(scores)))
  np.testing.assert_allclose(ours, ref["loss"], **TOL)
  grad = jax.grad(lambda s: getattr(losses, fn)(jnp.asarray(y_true), s))(jnp.asarray(_finite(scores)))
  np.testing.assert_allclose(grad, np.nan_to_num(ref["grad"]), **TOL)


@pytest.mark.parametrize("layer", ["GlobalPointer", "EfficientGlobalPointer"])
def test_low_precision_compute_keeps_float32_scores(layer):
  """bf16 projections: float32 scores, finite masking, close to the float32 head (bf16 has 8 bits)."""
  x = jax.random.normal(jax.random.PRNGKey(0), (B, L, D))
  f32 = _module(layer, True, True, True)
  params = f32.init(jax.random.PRNGKey(1), x, _mask())
  bf16 = _module(layer, True, True, True, dtype=jnp.bfloat16)
  lo, hi = bf16.apply(params, x, _mask()), f32.apply(params, x, _mask())
  assert lo.dtype == jnp.float32 and np.isfinite(np.asarray(lo)).all()
  valid = np.asarray(hi) > losses.MASKED / 2
  np.testing.assert_allclose(np.asarray(lo)[valid], np.asarray(hi)[valid], atol=0.1, rtol=0.05)
  loss = losses.global_pointer_crossentropy(jnp.zeros_like(lo), lo)
  assert np.isfinite(loss)


def test_parameters_carry_logical_axes():
  x = jnp.zeros((1, 4, D))
  gp = nn.get_partition_spec(heads.GlobalPointer(H, HEAD).init(jax.random.PRNGKey(0), x))["params"]
  assert gp["dense"]["kernel"] == jax.sharding.PartitionSpec("embed", "heads", None, "kv")
  assert gp["dense"]["bias"] == jax.sharding.PartitionSpec("heads", None, "kv")
  egp = nn.get_partition_spec(heads.EfficientGlobalPointer(H, HEAD).init(jax.random.PRNGKey(0), x))["params"]
  assert egp["p_dense"]["kernel"] == jax.sharding.PartitionSpec("embed", "kv")
  assert egp["q_dense"]["kernel"] == jax.sharding.PartitionSpec("kv", "heads", None)
  assert egp["q_dense"]["bias"] == jax.sharding.PartitionSpec("heads", None)


def test_char_map_matches_reference_rematch(cases):
  """Our tokenizer's offsets give the scripts' start/end maps: which char spans align, and to which tokens
  (multi-char tokens, [UNK], full-width, spaces, truncation)."""
  (_, vocab, _, _), ref = cases[-1]
  tok = tokenization.WordPieceTokenizer(vocab)
  for n, text in enumerate(REMATCH_TEXTS):
    cmap = spans.CharMap.from_offsets(np.asarray(tok.encode(text, max_length=REMATCH_MAXLEN).offsets))
    want_start, want_end = dict(map(tuple, ref[f"start{n}"].tolist())), dict(map(tuple, ref[f"end{n}"].tolist()))
    for a in range(len(text)):
      for b in range(a, len(text)):
        want = (want_start[a], want_end[b]) if a in want_start and b in want_end else None
        assert cmap.token_span(a, b) == want, (text, a, b)
    if n == 3:  # truncated: the end of the text maps to no token
      assert max(want_end) < len(text) - 10 and cmap.token_span(len(text) - 3, len(text) - 2) is None


def test_gplinker_heads_have_the_reference_switches():
  """duie_v1.py: entity (RoPE, tril), head/tail (no RoPE, no tril); duee_v1.py: argument (RoPE, tril),
  head/tail links (no RoPE, tril). Checked on the masks and on the modules' own settings."""
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 6, D))
  below = np.tril(np.ones((6, 6), bool), -1)
  rel = heads.GPLinkerRelation(predicates=3, head_size=HEAD)
  entity, head, tail = rel.apply(rel.init(jax.random.PRNGKey(1), x), x)
  assert (entity.shape, head.shape, tail.shape) == ((1, 2, 6, 6), (1, 3, 6, 6), (1, 3, 6, 6))
  assert (np.asarray(entity)[0][:, below] == losses.MASKED).all()
  assert (np.asarray(head)[0][:, below] != losses.MASKED).all() and (np.asarray(tail)[0][:, below] != losses.MASKED).all()
  ev = heads.GPLinkerEvent(labels=5, head_size=HEAD)
  outs = ev.apply(ev.init(jax.random.PRNGKey(1), x), x)
  assert [o.shape[1] for o in outs] == [5, 1, 1]
  assert all((np.asarray(o)[0][:, below] == losses.MASKED).all() for o in outs)
  # RoPE off on the link heads: their scores depend on content, not on position (shift-invariant input).
  same = jnp.broadcast_to(x[:, :1], x.shape)
  _, head, _ = rel.apply(rel.init(jax.random.PRNGKey(1), x), same)
  np.testing.assert_allclose(np.asarray(head)[0, :, 0, 5], np.asarray(head)[0, :, 2, 1], rtol=1e-6)
  entity, _, _ = rel.apply(rel.init(jax.random.PRNGKey(1), x), same)
  assert not np.allclose(np.asarray(entity)[0, :, 0, 1], np.asarray(entity)[0, :, 0, 5])


def test_default_init_is_lecun_normal_over_the_input_features():
  """As bert4keras' Dense(kernel_initializer='lecun_normal'): std 1/sqrt(fan_in), fan_in = the hidden size
  (not counted over the [H, 2, d] output axes)."""
  x = jnp.zeros((1, 4, 512))
  gp = heads.GlobalPointer(8, 32).init(jax.random.PRNGKey(0), x)["params"]
  egp = heads.EfficientGlobalPointer(8, 32).init(jax.random.PRNGKey(0), x)["params"]
  for kernel, fan_in in [(gp["dense"]["kernel"], 512), (egp["p_dense"]["kernel"], 512),
                         (egp["q_dense"]["kernel"], 64)]:
    std = float(np.std(np.asarray(nn.meta.unbox(kernel))))
    assert abs(std * np.sqrt(fan_in) - 1) < 0.1, (kernel.value.shape, std)
