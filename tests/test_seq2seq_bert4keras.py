"""Parity with bert4keras's UniLM RoFormerV2 (`build_transformer_model(..., model='roformer_v2',
application='unilm', with_mlm='linear')`) on the same random release checkpoint, read by our importer.

Inputs: [CLS] src [SEP] tgt [SEP]-like rows with ragged source lengths, target segments and right padding
(segment 0 there, as bert4keras pads). Tolerance: max |logit difference| <= 1e-5 (float32; logits are O(10)),
the bound of the encoder parity tests in test_convert_tf.py.
"""

import jax
import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("bert4keras")

import bert4keras_logits  # noqa: E402  (tests/ is on sys.path under pytest)
import roformer_jax as rj  # noqa: E402
from test_convert_tf import bert_config, release_variables, write_release  # noqa: E402

TOL = 1e-5
VOCAB, HIDDEN, LAYERS, HEADS, INTER = 211, 48, 3, 4, 80
SRC, TOTAL, L = (5, 9, 3, 12), (19, 14, 11, 17), 19  # row 3: a long source, then 5 target tokens


def _inputs():
  rng = np.random.RandomState(7)
  pos = np.arange(L)[None]
  real = pos < np.array(TOTAL)[:, None]
  ids = np.where(real, rng.randint(1, VOCAB, (len(SRC), L)), 0).astype(np.int32)
  segments = ((pos >= np.array(SRC)[:, None]) & real).astype(np.int32)
  return ids, segments


@pytest.fixture(scope="module")
def unilm_release(tmp_path_factory):
  root = tmp_path_factory.mktemp("unilm")
  folder = write_release(root / "v2", release_variables("v2", VOCAB, HIDDEN, LAYERS, INTER, seed=11),
                         bert_config("v2", VOCAB, HIDDEN, LAYERS, HEADS, INTER))
  ids, segments = _inputs()
  unilm, encoder = bert4keras_logits.run([(folder, "roformer_v2", ids, segments, "unilm"),
                                          (folder, "roformer_v2", ids, segments)], root)
  return folder, ids, segments, unilm, encoder


@pytest.mark.parametrize("attention", ["softmax", "blockwise", "pallas"])
def test_unilm_logits_match_bert4keras(unilm_release, attention):
  folder, ids, segments, want, encoder = unilm_release
  options = {} if attention == "softmax" else {"attention_options": (("block_q", 8), ("block_k", 8))}
  model, params = rj.from_pretrained(folder, attention=attention, **options)
  got = np.asarray(jax.jit(lambda p, i, s: model.apply({"params": p}, i, s, unilm=True))(params, ids, segments))
  real = ids != 0  # bert4keras's rows at padded queries are not defined by anything we promise
  delta = np.abs(got - want)[real].max()
  print(f"bert4keras unilm ({attention}): max |delta| = {delta:.2e}")
  assert delta <= TOL
  # The mask matters: bert4keras's own bidirectional encoder gives other logits (so the test can fail).
  assert np.abs(encoder - want)[real].max() > 100 * TOL
