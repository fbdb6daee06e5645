"""Cached greedy / beam decoding against re-encoding the whole prefix each step, and beam 1 against greedy.

A tiny random RoFormerV2 (params scaled up so greedy output varies); ragged right-padded sources."""

import jax
import numpy as np
import pytest

import roformer_jax as rj
from roformer_jax.model import RoFormerForMaskedLM, init_params, stack_layers
from roformer_jax.seq2seq import decode

SRC = np.array([[2, 5, 6, 7, 3, 0, 0], [2, 9, 8, 3, 0, 0, 0], [2, 11, 12, 13, 14, 15, 3]], np.int32)
N = 8


def _model(attention="softmax", scan=False):
  cfg = rj.get_config("roformer_v2_small", vocab_size=50, hidden_size=32, num_layers=2, num_heads=2,
                      intermediate_size=48, hidden_dropout=0.0, attention_dropout=0.0, attention=attention)
  params = init_params(RoFormerForMaskedLM(cfg), jax.random.PRNGKey(0))
  params = jax.tree_util.tree_map(lambda p: p * 4, params)  # less uniform logits: varied greedy tokens
  if scan:
    cfg = rj.get_config("roformer_v2_small", **{**cfg.__dict__, "scan_layers": True})
    params = stack_layers(params, cfg.num_layers)
  return RoFormerForMaskedLM(cfg), params


@pytest.mark.parametrize("attention,scan", [("softmax", False), ("blockwise", True)])
def test_cached_greedy_equals_recomputing_the_prefix(attention, scan):
  model, params = _model(attention, scan)
  free = decode.greedy_decode(model, params, SRC, max_new_tokens=N, end_id=-1)  # no end: all N steps
  again = decode.greedy_decode(model, params, SRC, max_new_tokens=N, end_id=-1, use_cache=False)
  np.testing.assert_array_equal(free.tokens, again.tokens)
  np.testing.assert_allclose(free.log_prob, again.log_prob, atol=1e-5, rtol=1e-5)
  assert len(np.unique(free.tokens)) > 2, "degenerate output would make the comparison weak"
  # An end token that row 0 emits at step 2: it stops there, pads after; the others run on.
  end = int(free.tokens[0, 2])
  got = decode.greedy_decode(model, params, SRC, max_new_tokens=N, end_id=end)
  want = decode.greedy_decode(model, params, SRC, max_new_tokens=N, end_id=end, use_cache=False)
  np.testing.assert_array_equal(got.tokens, want.tokens)
  np.testing.assert_array_equal(got.lengths, want.lengths)
  np.testing.assert_allclose(got.log_prob, want.log_prob, atol=1e-5, rtol=1e-5)
  first = int(np.argmax(free.tokens[0] == end))
  assert got.lengths[0] == first + 1 and (got.tokens[0, first + 1:] == 0).all()
  for b in range(len(SRC)):  # before its end, each row is the free run
    n = int(got.lengths[b])
    np.testing.assert_array_equal(got.tokens[b, :n], free.tokens[b, :n])


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_cached_beam_equals_recomputing_the_prefix(length_penalty):
  model, params = _model(scan=True)
  end = int(decode.greedy_decode(model, params, SRC, max_new_tokens=N, end_id=-1).tokens[1, 3])
  kw = dict(beam_size=3, max_new_tokens=N, end_id=end, length_penalty=length_penalty)
  got = decode.beam_search(model, params, SRC, **kw)
  want = decode.beam_search(model, params, SRC, use_cache=False, **kw)
  np.testing.assert_array_equal(got.tokens, want.tokens)
  np.testing.assert_array_equal(got.lengths, want.lengths)
  np.testing.assert_allclose(got.score, want.score, atol=1e-5, rtol=1e-5)
  assert (np.diff(np.asarray(got.score), axis=1) <= 0).all()  # best first
  # Scores are the log-probabilities of the tokens, re-scored by a plain teacher-forced forward.
  pairs = [(SRC[b], got.tokens[b, k, :int(got.lengths[b, k])]) for b in range(len(SRC)) for k in range(3)]
  np.testing.assert_allclose(_scores(model, params, pairs), np.asarray(got.log_prob).reshape(-1),
                             atol=1e-4, rtol=1e-5)


def _scores(model, params, pairs):
  """sum log p(tgt | src) for each (src, tgt), from one batched teacher-forced UniLM forward."""
  width = len(SRC[0]) + N
  ids, types = np.zeros((len(pairs), width), np.int32), np.zeros((len(pairs), width), np.int32)
  for i, (src, tgt) in enumerate(pairs):
    src = src[src != 0]
    ids[i, :len(src) + len(tgt)] = np.concatenate([src, tgt])
    types[i, len(src):len(src) + len(tgt)] = 1
  mask = np.arange(width)[None] < (ids != 0).sum(1, keepdims=True)
  lp = np.asarray(jax.nn.log_softmax(model.apply({"params": params}, ids, types, mask, unilm=True)))
  # position i scores token i + 1 where that token is a target
  picked = np.take_along_axis(lp[:, :-1], ids[:, 1:, None], 2)[..., 0]
  return (picked * types[:, 1:]).sum(1)


@pytest.mark.parametrize("length_penalty", [0.0, 0.7])
def test_beam_of_one_is_greedy(length_penalty):
  model, params = _model()
  end = int(decode.greedy_decode(model, params, SRC, max_new_tokens=N, end_id=-1).tokens[2, 4])
  greedy = decode.greedy_decode(model, params, SRC, max_new_tokens=N, end_id=end)
  beam = decode.beam_search(model, params, SRC, beam_size=1, max_new_tokens=N, end_id=end,
                            length_penalty=length_penalty)
  np.testing.assert_array_equal(beam.tokens[:, 0], greedy.tokens)
  np.testing.assert_array_equal(beam.lengths[:, 0], greedy.lengths)
  np.testing.assert_allclose(beam.log_prob[:, 0], greedy.log_prob, rtol=1e-6)


def test_pad_id_other_than_the_models_pad_token():
  # Sources padded with pad_id = 1 (the config's pad_token_id is 0): the cached path must mask those
  # slots as the re-encoding path does, and decode as the 0-padded sources do.
  model, params = _model()
  src = np.where(SRC == 0, 1, SRC)
  want = decode.greedy_decode(model, params, SRC, max_new_tokens=N, end_id=-1)
  for use_cache in (True, False):
    got = decode.greedy_decode(model, params, src, max_new_tokens=N, end_id=-1, pad_id=1, use_cache=use_cache)
    np.testing.assert_array_equal(got.tokens, want.tokens)
    np.testing.assert_allclose(got.log_prob, want.log_prob, atol=1e-5, rtol=1e-5)
  beam = decode.beam_search(model, params, src, beam_size=2, max_new_tokens=N, end_id=-1, pad_id=1)
  np.testing.assert_array_equal(beam.tokens,
                                decode.beam_search(model, params, SRC, beam_size=2, max_new_tokens=N, end_id=-1).tokens)


def test_max_new_tokens_below_one_is_refused():
  model, params = _model()
  with pytest.raises(ValueError, match="max_new_tokens"):
    decode.greedy_decode(model, params, SRC, max_new_tokens=0, end_id=3)
  with pytest.raises(ValueError, match="max_new_tokens"):
    decode.beam_search(model, params, SRC, beam_size=2, max_new_tokens=0, end_id=3)
