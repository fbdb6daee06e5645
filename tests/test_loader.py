"""Every loader error path names the file, the config key or the tensor."""

import json
import shutil

import jax
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

import roformer_jax as rj
from roformer_jax.convert.load import CheckpointError

SMALL = dict(vocab_size=301, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
             max_position_embeddings=64)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  """A roformer-port v2 folder, a roformer-port v1 folder and a transformers v1 encoder-only folder."""
  from roformer import RoFormerConfig, RoFormerForMaskedLM
  import transformers
  root = tmp_path_factory.mktemp("ckpts")
  torch.manual_seed(0)
  v2 = RoFormerForMaskedLM(RoFormerConfig(**SMALL, norm_type="rms_norm", use_bias=False, hidden_act="relu"))
  v2.save_pretrained(root / "v2", safe_serialization=False)
  RoFormerForMaskedLM(RoFormerConfig(**SMALL)).save_pretrained(root / "v1", safe_serialization=False)
  transformers.RoFormerModel(transformers.RoFormerConfig(**SMALL)).save_pretrained(root / "hf_encoder")
  return root


def _copy(src, dst, config_changes=None, drop_keys=()):
  shutil.copytree(src, dst)
  if config_changes is not None:
    cfg = json.loads((dst / "config.json").read_text())
    for k, v in config_changes.items():
      if v is None:
        cfg.pop(k, None)
      else:
        cfg[k] = v
    (dst / "config.json").write_text(json.dumps(cfg))
  if drop_keys:
    state = torch.load(dst / "pytorch_model.bin", weights_only=True)
    for k in drop_keys:
      state.pop(k)
    torch.save(state, dst / "pytorch_model.bin")
  return dst


def test_v2_weights_with_a_v1_config_are_refused(folders, tmp_path):
  # The ports' best-known failure (JunnYu/RoFormer_pytorch#48): a transformers-style v1 config over v2 weights.
  bad = _copy(folders / "v2", tmp_path / "x", {"norm_type": None, "use_bias": None, "hidden_act": "gelu"})
  with pytest.raises(CheckpointError, match=r"missing tensor roformer\.embeddings\.LayerNorm\.weight") as e:
    rj.from_pretrained(bad)
  assert "pytorch_model.bin" in str(e.value) and "norm_type/use_bias" in str(e.value)
  assert "missing tensor roformer.encoder.layer.1.attention.self.query.bias" in str(e.value)


def test_v1_weights_with_a_v2_config_are_refused(folders, tmp_path):
  bad = _copy(folders / "v1", tmp_path / "x", {"norm_type": "rms_norm", "use_bias": False, "hidden_act": "relu"})
  with pytest.raises(CheckpointError, match=r"unexpected tensor roformer\.embeddings\.LayerNorm\.bias"):
    rj.from_pretrained(bad)


def test_mis_shaped_tensor_is_named(folders, tmp_path):
  bad = _copy(folders / "v2", tmp_path / "x", {"vocab_size": 300})
  with pytest.raises(CheckpointError,
                     match=r"tensor roformer\.embeddings\.word_embeddings\.weight has shape \(301, 32\), "
                           r"the config needs \(300, 32\)"):
    rj.from_pretrained(bad)


def test_missing_and_unexpected_tensors_are_named(folders, tmp_path):
  bad = _copy(folders / "v1", tmp_path / "x", drop_keys=["roformer.encoder.layer.1.output.dense.weight"])
  with pytest.raises(CheckpointError, match=r"missing tensor roformer\.encoder\.layer\.1\.output\.dense\.weight "
                                            r"\(shape \(32, 48\)\)"):
    rj.from_pretrained(bad)
  extra = _copy(folders / "hf_encoder", tmp_path / "y")
  tensors = load_file(extra / "model.safetensors")
  tensors["pooler.dense.weight"] = np.zeros((32, 32), np.float32)
  save_file(tensors, extra / "model.safetensors")
  with pytest.raises(CheckpointError, match=r"unexpected tensor roformer\.pooler\.dense\.weight \(32, 32\)"):
    rj.from_pretrained(extra)
  model, _ = rj.from_pretrained(extra, ignore=[r"pooler\."])  # explicitly allowed
  assert isinstance(model, rj.RoFormerModel)


def test_mlm_head_demanded_from_an_encoder_only_checkpoint(folders):
  model, params = rj.from_pretrained(folders / "hf_encoder")  # auto: no head, so the encoder
  assert isinstance(model, rj.RoFormerModel) and "embeddings" in params
  with pytest.raises(CheckpointError, match=r"missing tensor cls\.predictions\.transform\.dense\.weight"):
    rj.from_pretrained(folders / "hf_encoder", with_mlm=True)


def test_untied_decoder_is_refused(folders, tmp_path):
  bad = _copy(folders / "v2", tmp_path / "x")
  state = torch.load(bad / "pytorch_model.bin", weights_only=True)
  state["cls.predictions.decoder.weight"] = state["cls.predictions.decoder.weight"].clone() + 1.0
  torch.save(state, bad / "pytorch_model.bin")
  with pytest.raises(CheckpointError, match=r"cls\.predictions\.decoder\.weight differs from the word embeddings"):
    rj.from_pretrained(bad)


@pytest.mark.parametrize("changes, message", [
    ({"hidden_size": None}, r"config\.json: missing key 'hidden_size'"),
    ({"use_bias": True}, r"config\.json: use_bias=True with norm_type='rms_norm' is neither"),
    ({"hidden_act": "gelu"}, r"config\.json: hidden_act='gelu'; RoFormer v2 uses 'relu'"),
    ({"model_type": "bert"}, r"config\.json: model_type is 'bert', expected 'roformer'"),
    ({"num_attention_heads": 5}, r"config\.json: ModelConfig\.hidden_size \(32\) must be divisible"),
])
def test_config_errors_name_file_and_key(folders, tmp_path, changes, message):
  bad = _copy(folders / "v2", tmp_path / "x", changes)
  with pytest.raises(rj.ConfigError, match=message):
    rj.from_pretrained(bad)


def test_file_errors(folders, tmp_path):
  with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
    rj.from_pretrained(tmp_path / "nowhere")
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(FileNotFoundError, match=r"empty: no config\.json"):
    rj.from_pretrained(empty)
  (empty / "config.json").write_text(json.dumps(json.loads((folders / "v2" / "config.json").read_text())))
  with pytest.raises(FileNotFoundError, match=r"no weights found \(looked for model\.safetensors"):
    rj.from_pretrained(empty)
  (empty / "config.json").write_text('{"hidden_size": 32,\n "vocab_size": }')
  with pytest.raises(rj.ConfigError, match=r"config\.json: invalid JSON at line 2"):
    rj.from_pretrained(empty)


def test_config_overrides_and_dtype(folders):
  model, _ = rj.from_pretrained(folders / "v2", dtype="bfloat16", hidden_dropout=0.0, attention="softmax")
  assert model.cfg.dtype == "bfloat16" and model.cfg.hidden_dropout == 0.0 and model.cfg.version == "v2"


def test_sharded_checkpoints_load_as_the_single_file(tmp_path):
  """transformers' save_pretrained(max_shard_size=...) folders, safetensors and pytorch_model.bin shards."""
  import transformers
  torch.manual_seed(0)
  model = transformers.RoFormerForMaskedLM(transformers.RoFormerConfig(**SMALL))
  model.save_pretrained(tmp_path / "single")
  model.save_pretrained(tmp_path / "st", max_shard_size="30KB")
  model.save_pretrained(tmp_path / "bin", max_shard_size="30KB", safe_serialization=False)
  assert len(list((tmp_path / "st").glob("model-*.safetensors"))) > 1
  assert len(list((tmp_path / "bin").glob("pytorch_model-*.bin"))) > 1
  _, single = rj.from_pretrained(tmp_path / "single")
  for name in ("st", "bin"):
    _, params = rj.from_pretrained(tmp_path / name)
    assert jax.tree.structure(params) == jax.tree.structure(single)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(single)):
      np.testing.assert_array_equal(a, b)
  shard = sorted((tmp_path / "bin").glob("pytorch_model-*.bin"))[1]
  shard.unlink()
  with pytest.raises(FileNotFoundError, match=rf"pytorch_model\.bin\.index\.json: shard file\(s\) \['{shard.name}'\]"):
    rj.from_pretrained(tmp_path / "bin")
