"""Parity with the real PyTorch ports: the `roformer` package (v1, v2) and `transformers` (v1).

Random-initialised peer models are saved with `save_pretrained` and read back with our
`from_pretrained`; hidden states and MLM logits must agree to max |diff| <= 1e-5 in float32.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import roformer_jax as rj

TOL = 1e-5


def _roformer_port(version, **kw):
  from roformer import RoFormerConfig, RoFormerForMaskedLM
  extra = dict(norm_type="rms_norm", use_bias=False, hidden_act="relu") if version == "v2" else {}
  return RoFormerForMaskedLM(RoFormerConfig(**kw, **extra))


def _transformers_v1(**kw):
  from transformers import RoFormerConfig, RoFormerForMaskedLM
  return RoFormerForMaskedLM(RoFormerConfig(**kw))


# Deliberately unlike the presets: FFN != 4H, odd vocab sizes, 3 and 5 layers, head size 16 / 24.
PEERS = {
    "roformer-v2": (lambda: _roformer_port("v2", vocab_size=1001, hidden_size=96, num_hidden_layers=3,
                                           num_attention_heads=6, intermediate_size=200,
                                           max_position_embeddings=512), False),
    "roformer-v1": (lambda: _roformer_port("v1", vocab_size=777, hidden_size=96, num_hidden_layers=5,
                                           num_attention_heads=4, intermediate_size=160,
                                           max_position_embeddings=512), False),
    "transformers-v1": (lambda: _transformers_v1(vocab_size=1003, hidden_size=72, num_hidden_layers=3,
                                                 num_attention_heads=3, intermediate_size=300,
                                                 max_position_embeddings=512), True),
}


def _randomize_norms(peer):
  # Fresh LayerNorms are exactly (1, 0) and MLM biases 0: perturb them so a mapping slip shows.
  g = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for name, p in peer.named_parameters():
      if "LayerNorm" in name or name.endswith("bias"):
        p.add_(0.1 * torch.randn(p.shape, generator=g))


@functools.lru_cache(maxsize=None)
def _saved_peer(name, tmp_root):
  torch.manual_seed(0)
  build, safe = PEERS[name]
  peer = build().eval()
  _randomize_norms(peer)
  folder = f"{tmp_root}/{name}"
  # The roformer port's tied head needs safe_serialization=False under transformers 4.46.
  peer.save_pretrained(folder, safe_serialization=safe)
  return peer, folder


@pytest.fixture(scope="module")
def tmp_root(tmp_path_factory):
  return str(tmp_path_factory.mktemp("peers"))


def _batch(vocab, batch, length, seed):
  rng = np.random.RandomState(seed)
  ids = rng.randint(1, vocab, size=(batch, length))
  for b in range(1, batch):  # right padding of varying amount; row 0 stays full
    ids[b, max(1, length - 3 * b * max(1, length // 8)):] = 0
  types = rng.randint(0, 2, size=(batch, length))
  return ids, types, (ids != 0).astype(np.int64)


@pytest.mark.parametrize("name", list(PEERS))
def test_mlm_logits_and_hidden_states_match_peer(name, tmp_root):
  peer, folder = _saved_peer(name, tmp_root)
  model, params = rj.from_pretrained(folder)
  encoder, enc_params = rj.from_pretrained(folder, with_mlm=False)
  assert isinstance(model, rj.RoFormerForMaskedLM)
  mlm_fn = jax.jit(lambda p, i, t: model.apply({"params": p}, i, t))
  enc_fn = jax.jit(lambda p, i, t: encoder.apply({"params": p}, i, t))
  vocab = model.cfg.vocab_size
  for batch, length in [(1, 1), (3, 7), (2, 64), (2, 512)]:
    ids, types, mask = _batch(vocab, batch, length, seed=length)
    with torch.no_grad():
      out = peer(input_ids=torch.tensor(ids), token_type_ids=torch.tensor(types),
                 attention_mask=torch.tensor(mask), output_hidden_states=True)
    ours_logits = np.asarray(mlm_fn(params, jnp.asarray(ids), jnp.asarray(types)))
    ours_hidden = np.asarray(enc_fn(enc_params, jnp.asarray(ids), jnp.asarray(types)))
    assert ours_logits.dtype == np.float32 and ours_logits.shape == (batch, length, vocab)
    np.testing.assert_allclose(ours_hidden, out.hidden_states[-1].numpy(), rtol=0, atol=TOL,
                               err_msg=f"{name} hidden states, batch={batch} length={length}")
    np.testing.assert_allclose(ours_logits, out.logits.numpy(), rtol=0, atol=TOL,
                               err_msg=f"{name} MLM logits, batch={batch} length={length}")


@pytest.mark.parametrize("name", ["roformer-v2", "transformers-v1"])
def test_gathered_logits_equal_full_logits(name, tmp_root):
  _, folder = _saved_peer(name, tmp_root)
  model, params = rj.from_pretrained(folder)
  ids, types, _ = _batch(model.cfg.vocab_size, 2, 33, seed=3)
  positions = np.array([[0, 5, 17, 32], [1, 2, 3, 4]])
  full = model.apply({"params": params}, ids, types)
  gathered = model.apply({"params": params}, ids, types, masked_positions=positions)
  assert gathered.shape == (2, 4, model.cfg.vocab_size)
  np.testing.assert_allclose(gathered, np.take_along_axis(np.asarray(full), positions[..., None], 1), atol=1e-6)


def test_v2_small_preset_shapes_match_peer(tmp_path):
  """The roformer_v2_small shapes themselves (6 x 384, 12000 vocab), at length 128."""
  cfg = rj.get_config("roformer_v2_small")
  torch.manual_seed(0)
  peer = _roformer_port("v2", vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                        intermediate_size=cfg.intermediate_size).eval()
  peer.save_pretrained(tmp_path, safe_serialization=False)
  model, params = rj.from_pretrained(tmp_path)
  assert model.cfg.replace(hidden_dropout=cfg.hidden_dropout, attention_dropout=cfg.attention_dropout) == cfg
  ids, types, mask = _batch(cfg.vocab_size, 2, 128, seed=0)
  with torch.no_grad():
    want = peer(input_ids=torch.tensor(ids), token_type_ids=torch.tensor(types),
                attention_mask=torch.tensor(mask)).logits.numpy()
  got = np.asarray(jax.jit(model.apply)({"params": params}, ids, types))
  np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


def test_v1_head_fine_tuned_in_the_roformer_port_keeps_its_trained_bias(tmp_path):
  """The `roformer` port unties cls.predictions.decoder.bias from cls.predictions.bias when it loads a
  checkpoint, and its forward uses decoder.bias; a model fine-tuned there saves two different biases.
  The trained one (decoder.bias) must be the one we load."""
  torch.manual_seed(0)
  kw = dict(vocab_size=101, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48,
            max_position_embeddings=64)
  _roformer_port("v1", **kw).save_pretrained(tmp_path / "base", safe_serialization=False)
  from roformer import RoFormerForMaskedLM
  peer = RoFormerForMaskedLM.from_pretrained(tmp_path / "base").eval()
  with torch.no_grad():  # what an MLM fine-tuning step does to the bias the port actually uses
    peer.cls.predictions.decoder.bias.add_(torch.randn(kw["vocab_size"]))
  peer.save_pretrained(tmp_path / "tuned", safe_serialization=False)
  saved = torch.load(tmp_path / "tuned" / "pytorch_model.bin", weights_only=True)
  assert not torch.equal(saved["cls.predictions.bias"], saved["cls.predictions.decoder.bias"])
  ids, types, mask = _batch(kw["vocab_size"], 2, 9, seed=0)
  with torch.no_grad():
    want = peer(input_ids=torch.tensor(ids), token_type_ids=torch.tensor(types),
                attention_mask=torch.tensor(mask)).logits.numpy()
  model, params = rj.from_pretrained(tmp_path / "tuned")
  np.testing.assert_allclose(np.asarray(model.apply({"params": params}, ids, types)), want, rtol=0, atol=TOL)
