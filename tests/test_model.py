"""ModelConfig validation, RoPE properties, layer-stack layouts and the dtype policy."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import roformer_jax as rj
from roformer_jax import rope
from roformer_jax.model import stack_layers, unstack_layers


# ----------------------------------------------------------------------------------------------
# ModelConfig
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("changes, message", [
    (dict(hidden_size=100, num_heads=12), r"hidden_size \(100\) must be divisible by ModelConfig.num_heads \(12\)"),
    (dict(hidden_size=60, num_heads=4), r"ModelConfig.num_heads: head size .* = 15 must be even"),
    (dict(version="v3"), r"ModelConfig.version: unknown version 'v3'"),
    (dict(vocab_size=0), r"ModelConfig.vocab_size must be a positive int"),
    (dict(num_layers=-1), r"ModelConfig.num_layers must be a positive int"),
    (dict(intermediate_size=2.5), r"ModelConfig.intermediate_size must be a positive int"),
    (dict(hidden_dropout=1.0), r"ModelConfig.hidden_dropout must be in \[0, 1\)"),
    (dict(dtype="float16"), r"ModelConfig.dtype: unknown dtype 'float16'"),
    (dict(attention="nope"), r"ModelConfig.attention: unknown variant 'nope'"),
    (dict(remat="some"), r"ModelConfig.remat: unknown policy 'some'"),
    (dict(embedding_size=64), r"ModelConfig.embedding_size: RoFormerV2 has no embedding mapping"),
    (dict(norm_eps=0.0), r"ModelConfig.norm_eps must be positive"),
    (dict(pad_token_id=12000), r"ModelConfig.pad_token_id \(12000\) must be in"),
    # Wrong types and non-finite numbers: named, not a bare TypeError, nor silently accepted.
    (dict(hidden_dropout="0.1"), r"ModelConfig.hidden_dropout must be in \[0, 1\), got '0.1'"),
    (dict(attention_dropout=None), r"ModelConfig.attention_dropout must be in \[0, 1\), got None"),
    (dict(norm_eps="1e-12"), r"ModelConfig.norm_eps must be positive"),
    (dict(norm_eps=float("nan")), r"ModelConfig.norm_eps must be positive"),
    (dict(rope_base=float("inf")), r"ModelConfig.rope_base must be positive"),
    (dict(pad_token_id=1.5), r"ModelConfig.pad_token_id \(1.5\) must be in"),
    (dict(pad_token_id=None), r"ModelConfig.pad_token_id \(None\) must be in"),
    (dict(scan_layers="no"), r"ModelConfig.scan_layers must be a bool, got 'no'"),
    (dict(rotary_value=1), r"ModelConfig.rotary_value must be a bool, got 1"),
    (dict(attention_options={"block_q": 8}), r"ModelConfig.attention_options must be a tuple of \(key, value\)"),
])
def test_config_errors_name_the_field(changes, message):
  with pytest.raises(rj.ConfigError, match=message):
    rj.get_config("roformer_v2_base", **changes)


def test_presets_have_published_shapes():
  shapes = {name: (c.num_layers, c.hidden_size, c.num_heads, c.intermediate_size, c.vocab_size, c.version)
            for name, c in rj.PRESETS.items()}
  assert shapes["roformer_v2_small"] == (6, 384, 6, 1536, 12000, "v2")
  assert shapes["roformer_v2_base"] == (12, 768, 12, 3072, 12000, "v2")
  assert shapes["roformer_v2_large"] == (24, 1024, 16, 4096, 12000, "v2")
  assert shapes["roformer_v1_char_small"][-2:] == (12000, "v1")
  assert shapes["roformer_v1_base"] == (12, 768, 12, 3072, 50000, "v1")
  assert shapes["roformer_v1_small"] == (6, 384, 6, 1536, 50000, "v1")
  with pytest.raises(rj.ConfigError, match="unknown preset 'huge'"):
    rj.get_config("huge")


def test_v2_parameter_count_matches_release():
  # roformer-spec.md §3.2: 15.2M / 94.2M / 314.3M parameters.
  for name, millions in [("roformer_v2_small", 15.2), ("roformer_v2_base", 94.2), ("roformer_v2_large", 314.3)]:
    model = rj.RoFormerForMaskedLM(rj.get_config(name))
    shapes = jax.eval_shape(lambda: rj.init_params(model, jax.random.PRNGKey(0)))
    count = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes))
    assert abs(count / 1e6 - millions) < 0.05, (name, count)


# ----------------------------------------------------------------------------------------------
# RoPE
# ----------------------------------------------------------------------------------------------
def _reference_rope(x, positions, base=10000.0):
  """bert4keras' formulation (roformer-spec.md §1.1), written independently in numpy float64."""
  d = x.shape[-1]
  theta = base ** (-2 * np.arange(d // 2) / d)
  ang = positions[:, None] * theta[None]
  sinus = np.stack([np.sin(ang), np.cos(ang)], -1).reshape(len(positions), d)  # [sin0,cos0,sin1,cos1..]
  cos_pos = np.repeat(sinus[:, 1::2], 2, -1)[:, None]
  sin_pos = np.repeat(sinus[:, ::2], 2, -1)[:, None]
  x2 = np.stack([-x[..., 1::2], x[..., ::2]], -1).reshape(x.shape)
  return x * cos_pos + x2 * sin_pos


def test_rope_matches_bert4keras_formula():
  x = np.random.RandomState(0).randn(37, 3, 64)
  pos = np.arange(37, dtype=np.float64)
  got = rope.apply_rope(jnp.asarray(x, jnp.float32), *rope.rope_angles(jnp.arange(37), 64))
  np.testing.assert_allclose(np.asarray(got), _reference_rope(x, pos), atol=2e-5)


def test_rope_scores_depend_only_on_relative_position():
  rng = np.random.RandomState(1)
  q, k = (jnp.asarray(rng.randn(1, 1, 32), jnp.float32) for _ in range(2))

  def score(m, n):
    qm = rope.apply_rope(q, *rope.rope_angles(jnp.array([m]), 32))
    kn = rope.apply_rope(k, *rope.rope_angles(jnp.array([n]), 32))
    return float(jnp.sum(qm * kn))

  for m, n in [(0, 5), (3, 9), (100, 104), (7, 0)]:
    for shift in (1, 17, 1000):
      assert score(m, n) == pytest.approx(score(m + shift, n + shift), abs=2e-3 * (1 + abs(score(m, n))))
  assert score(0, 5) != pytest.approx(score(0, 6), abs=1e-3)


def test_any_length_and_explicit_positions():
  cfg = rj.get_config("tiny", num_layers=1)
  model = rj.RoFormerModel(cfg)
  params = rj.init_params(model, jax.random.PRNGKey(0))
  ids = jnp.asarray(np.random.RandomState(0).randint(5, cfg.vocab_size, size=(1, 2100)))
  out = model.apply({"params": params}, ids)  # past every port's 1536-entry table
  assert out.shape == (1, 2100, cfg.hidden_size) and bool(jnp.all(jnp.isfinite(out)))
  # Explicit positions 0..L-1 equal the default; shifted positions change nothing either (relative).
  short = ids[:, :40]
  base = model.apply({"params": params}, short)
  same = model.apply({"params": params}, short, position_ids=jnp.arange(40))
  shifted = model.apply({"params": params}, short, position_ids=jnp.arange(40) + 1000)
  np.testing.assert_allclose(base, same, atol=1e-6)
  np.testing.assert_allclose(base, shifted, atol=5e-4)
  reversed_pos = model.apply({"params": params}, short, position_ids=jnp.arange(40)[::-1])
  assert not np.allclose(base, reversed_pos, atol=1e-3)


# ----------------------------------------------------------------------------------------------
# Layer-stack layouts, padding, packing and dtypes
# ----------------------------------------------------------------------------------------------
def _tiny(**kw):
  cfg = rj.get_config("tiny", num_layers=3, vocab_size=500, **kw)
  model = rj.RoFormerForMaskedLM(cfg)
  return cfg, model, rj.init_params(model, jax.random.PRNGKey(0))


def test_scan_and_remat_match_the_loop_forward_and_grad():
  cfg, model, params = _tiny()
  ids = jnp.asarray(np.random.RandomState(0).randint(1, 500, size=(2, 16)))

  def loss(model, p):
    return jnp.mean(model.apply({"params": p}, ids) ** 2)

  want, want_grad = jax.value_and_grad(lambda p: loss(model, p))(params)
  for changes in [dict(scan_layers=True), dict(remat="full"), dict(scan_layers=True, remat="dots")]:
    other = rj.RoFormerForMaskedLM(cfg.replace(**changes))
    p = stack_layers(params, cfg.num_layers) if changes.get("scan_layers") else params
    got, grad = jax.value_and_grad(lambda p: loss(other, p))(p)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    grad = unstack_layers(grad)
    for g, w in zip(jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(want_grad)):
      np.testing.assert_allclose(g, w, atol=1e-6, rtol=1e-5)
  # The scanned init has the same tree as stacking the loop's.
  scanned = rj.RoFormerForMaskedLM(cfg.replace(scan_layers=True))
  axes = rj.logical_axes(scanned)
  assert axes["roformer"]["layers"]["attention"]["query"]["kernel"] == jax.sharding.PartitionSpec("layers", "embed", "heads", "kv")


@pytest.mark.parametrize("changes", [dict(version="v1"), dict(), dict(scan_layers=True, remat="dots"),
                                     dict(attention="dot_product"), dict(attention="blockwise")])
def test_gathered_output_equals_full_output_then_gather(changes):
  # With masked positions the last layer runs at those rows only (or, for variants without query
  # subsets, runs in full and gathers): the logits and every parameter gradient must be unchanged.
  from roformer_jax.model import gather_positions, prunes_last_layer
  cfg, model, params = _tiny(hidden_dropout=0.0, attention_dropout=0.0, **changes)
  assert prunes_last_layer(cfg) == (cfg.attention != "blockwise")
  rng = np.random.RandomState(6)
  ids = jnp.asarray(rng.randint(1, 500, size=(2, 20)))
  segments = jnp.asarray([[1] * 12 + [2] * 8, [1] * 15 + [0] * 5])
  pos = jnp.asarray([[0, 4, 11, 12, 19, 0], [2, 3, 14, 16, 0, 0]])  # unused slots repeat position 0
  weights = jnp.cos(jnp.arange(500, dtype=jnp.float32))

  def logits(p, positions):
    return model.apply({"params": p}, ids, None, segments > 0, segment_ids=segments,
                       masked_positions=positions)

  gathered = lambda p: logits(p, pos)
  full = lambda p: gather_positions(logits(p, None), pos)
  np.testing.assert_allclose(gathered(params), full(params), atol=2e-6, rtol=1e-5)
  got = jax.grad(lambda p: jnp.sum(gathered(p) * weights))(params)
  want = jax.grad(lambda p: jnp.sum(full(p) * weights))(params)
  for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree_util.tree_leaves(want)):
    # atol scales with the leaf: a small entry of a gradient whose entries reach ~20 (the tied embedding)
    # sums terms of that size in another order (seen: 4.3e-6 on a Zen 4 VM); a pruning bug is O(1).
    np.testing.assert_allclose(g, w, atol=1e-6 * max(1.0, float(np.abs(w).max())), rtol=1e-4,
                               err_msg=jax.tree_util.keystr(path))


def test_padding_does_not_change_real_tokens():
  cfg, model, params = _tiny()
  ids = np.random.RandomState(2).randint(1, 500, size=(1, 10))
  padded = np.concatenate([ids, np.zeros((1, 6), ids.dtype)], 1)
  a = model.apply({"params": params}, ids)
  b = model.apply({"params": params}, padded)
  np.testing.assert_allclose(a, b[:, :10], atol=2e-5)


def test_packed_segments_do_not_attend_across_documents():
  cfg, model, params = _tiny()
  rng = np.random.RandomState(3)
  doc1, doc2 = rng.randint(1, 500, size=(1, 7)), rng.randint(1, 500, size=(1, 9))
  packed = np.concatenate([doc1, doc2], 1)
  segments = np.array([[1] * 7 + [2] * 9])
  # Each document restarts its RoPE positions, as packing does.
  positions = np.array([list(range(7)) + list(range(9))])
  out = model.apply({"params": params}, packed, segment_ids=segments, position_ids=positions)
  np.testing.assert_allclose(out[:, :7], model.apply({"params": params}, doc1), atol=2e-5)
  np.testing.assert_allclose(out[:, 7:], model.apply({"params": params}, doc2), atol=2e-5)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_bfloat16_compute_keeps_float32_params_and_logits(version):
  cfg, model, params = _tiny(version=version)
  assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(params))
  ids = jnp.asarray(np.random.RandomState(4).randint(1, 500, size=(2, 24)))
  bf16 = rj.RoFormerForMaskedLM(cfg.replace(dtype="bfloat16"))
  hidden = rj.RoFormerModel(cfg.replace(dtype="bfloat16")).apply({"params": params["roformer"]}, ids)
  assert hidden.dtype == jnp.bfloat16
  got = bf16.apply({"params": params}, ids)
  want = model.apply({"params": params}, ids)
  assert got.dtype == jnp.float32
  # bf16 has 8 mantissa bits: agreement to a few percent of the logit scale.
  assert float(jnp.max(jnp.abs(got - want))) < 0.05 * float(jnp.max(jnp.abs(want))) + 0.05


def test_dropout_is_active_only_when_not_deterministic():
  cfg, model, params = _tiny(version="v1")
  ids = jnp.asarray(np.random.RandomState(5).randint(1, 500, size=(2, 12)))
  a = model.apply({"params": params}, ids, deterministic=False, rngs={"dropout": jax.random.PRNGKey(1)})
  b = model.apply({"params": params}, ids, deterministic=False, rngs={"dropout": jax.random.PRNGKey(2)})
  c = model.apply({"params": params}, ids)
  assert not np.allclose(a, b) and not np.allclose(a, c)


_B4K_MLM_DROPOUT = """
import json
from bert4keras.models import build_transformer_model
out = {}
for name in ("roformer", "roformer_v2"):
  m = build_transformer_model(model=name, with_mlm="linear", vocab_size=50, hidden_size=16, num_hidden_layers=1,
                              num_attention_heads=2, intermediate_size=32, hidden_act="relu", dropout_rate=0.3)
  out[name] = {l.name: float(l.rate) for l in m.layers if l.name.startswith("Output-MLM")
               and hasattr(l, "rate")}
print(json.dumps(out))
"""


def test_v2_mlm_head_drops_its_input_as_bert4keras_and_v1_does_not():
  # bert4keras (the authors' library) puts "Output-MLM-Dropout" at the model's dropout rate before
  # RoFormerV2's tied decoder, and no dropout in v1's (BERT's) MLM head.
  import json
  import subprocess
  import sys
  from bert4keras_logits import ENV
  proc = subprocess.run([sys.executable, "-c", _B4K_MLM_DROPOUT], env={**os.environ, **ENV}, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  ref = json.loads(proc.stdout.strip().splitlines()[-1])
  assert ref == {"roformer": {}, "roformer_v2": {"Output-MLM-Dropout": 0.3}}
  rate = 0.3
  h = jnp.asarray(np.random.RandomState(0).uniform(1, 2, size=(4, 7, 128)), jnp.float32)
  for version in ("v1", "v2"):
    cfg, model, params = _tiny(version=version, hidden_dropout=rate)
    if version == "v2":  # the decoder reads the hidden state through the identity: the embedding's first rows
      params["roformer"]["embeddings"]["word_embeddings"] = jnp.eye(500, 128)
    head = lambda det, key: model.apply({"params": params}, h, det, rngs={"dropout": key},
                                        method=rj.RoFormerForMaskedLM.head)[..., :128]
    a, b = head(False, jax.random.PRNGKey(1)), head(True, jax.random.PRNGKey(1))
    if version == "v1":
      np.testing.assert_array_equal(a, b)
      continue
    np.testing.assert_array_equal(b, h)
    kept = np.asarray(a) != 0
    np.testing.assert_allclose(np.asarray(a)[kept], np.asarray(h / (1 - rate))[kept], rtol=1e-6)
    assert abs(1 - kept.mean() - rate) < 0.05, kept.mean()
    # The model's own training forward goes through it.
    ids = jnp.asarray(np.random.RandomState(5).randint(1, 500, size=(2, 12)))
    cfg0, model0, _ = _tiny(version="v2", hidden_dropout=rate, attention_dropout=0.0)
    logits = model0.apply({"params": params}, ids, deterministic=False, rngs={"dropout": jax.random.PRNGKey(3)})
    hidden = model0.apply({"params": params}, ids, deterministic=False, rngs={"dropout": jax.random.PRNGKey(3)},
                          method=rj.RoFormerForMaskedLM.hidden_and_logits)[0]
    live = np.asarray(hidden) != 0
    dropped = (np.asarray(logits)[..., :128] == 0)[live]
    assert live.mean() > 0.5 and 0.2 < dropped.mean() < 0.4, (live.mean(), dropped.mean())


@pytest.mark.parametrize("attention", ["softmax", "blockwise"])
def test_flop_count_matches_xla_cost_analysis(attention):
  # The MFU numerator counts what the step computes: with masked positions the pruned last layer
  # (softmax) or the full one (blockwise). XLA's own count adds elementwise work, a fraction of a percent.
  # softmax runs its XLA path here: XLA's cost analysis does not see into the fused CPU kernel's custom call.
  from roformer_jax.train import flops
  options = (("implementation", "xla"),) if attention == "softmax" else ()
  cfg = rj.get_config("tiny", num_layers=3, hidden_size=256, num_heads=4, intermediate_size=1024, vocab_size=3000,
                      attention=attention, hidden_dropout=0.0, attention_dropout=0.0, attention_options=options)
  model = rj.RoFormerForMaskedLM(cfg)
  params = rj.init_params(model, jax.random.PRNGKey(0))
  batch, seq, preds = 2, 64, 10
  ids = jnp.ones((batch, seq), jnp.int32)
  pos = jnp.tile(jnp.arange(preds)[None] * 3, (batch, 1))
  cost = jax.jit(lambda p: model.apply({"params": p}, ids, masked_positions=pos)).lower(params).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  ratio = cost["flops"] / flops.forward_flops(cfg, batch, seq, preds)
  assert 1.0 <= ratio < 1.02, ratio
