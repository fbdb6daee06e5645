"""Import of bert4keras TF releases: parity with bert4keras itself, v1/v2 detection, named errors.

Random checkpoints are written the way the releases were (Google-BERT variable names, saved by
tf.compat.v1.train.Saver in a graph). The names below are spelled out from roformer-spec.md §5.1,
independently of `tf_ckpt.tf_name`, so they check that table too.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("bert4keras")

import bert4keras_logits  # noqa: E402  (tests/ is on sys.path under pytest)
import roformer_jax as rj  # noqa: E402
from roformer_jax.convert import tf_ckpt  # noqa: E402
from roformer_jax.convert.load import CheckpointError  # noqa: E402
from roformer_jax.model import unstack_layers  # noqa: E402

TOL = 1e-5


def release_variables(version, vocab, hidden, layers, inter, embed=None, seed=0):
  """Random variables of a release checkpoint, by their Google-BERT names (spec §5.1)."""
  rng = np.random.RandomState(seed)
  embed = embed or hidden
  out = {}

  def add(name, *shape, std=None, mean=0.0):
    std = (1.0 / np.sqrt(shape[0]) if len(shape) == 2 else 0.1) if std is None else std
    out[name] = (mean + std * rng.randn(*shape)).astype(np.float32)

  def dense(prefix, n_in, n_out):
    add(f"{prefix}/kernel", n_in, n_out)
    if version == "v1":
      add(f"{prefix}/bias", n_out)

  def norm(prefix, n):
    if version == "v1":
      add(f"{prefix}/gamma", n, mean=1.0)
      add(f"{prefix}/beta", n)

  add("bert/embeddings/word_embeddings", vocab, embed, std=0.5)
  add("bert/embeddings/token_type_embeddings", 2, embed, std=0.5)
  norm("bert/embeddings/LayerNorm", embed)
  if embed != hidden:
    dense("bert/encoder/embedding_hidden_mapping_in", embed, hidden)
  for i in range(layers):
    p = f"bert/encoder/layer_{i}"
    for name in ("query", "key", "value"):
      dense(f"{p}/attention/self/{name}", hidden, hidden)
    dense(f"{p}/attention/output/dense", hidden, hidden)
    norm(f"{p}/attention/output/LayerNorm", hidden)
    dense(f"{p}/intermediate/dense", hidden, inter)
    dense(f"{p}/output/dense", inter, hidden)
    norm(f"{p}/output/LayerNorm", hidden)
  if version == "v1":
    dense("cls/predictions/transform/dense", hidden, embed)
    norm("cls/predictions/transform/LayerNorm", embed)
    add("cls/predictions/output_bias", vocab)
  return out


def write_release(folder, variables, bert_config):
  """bert_config.json + bert_model.ckpt.* written with a v1 Saver, as the releases were."""
  import tensorflow as tf
  folder = Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
    tf_vars = [tf.compat.v1.Variable(value, name=name) for name, value in variables.items()]
    sess.run(tf.compat.v1.global_variables_initializer())
    tf.compat.v1.train.Saver(tf_vars).save(sess, str(folder / "bert_model.ckpt"), write_meta_graph=False)
  (folder / "bert_config.json").write_text(json.dumps(bert_config))
  (folder / "vocab.txt").write_text("".join(f"tok{i}\n" for i in range(bert_config["vocab_size"])))
  return folder


def bert_config(version, vocab, hidden, layers, heads, inter, embed=None):
  out = dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
             intermediate_size=inter, hidden_act="gelu" if version == "v1" else "relu", type_vocab_size=2,
             hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, max_position_embeddings=512,
             initializer_range=0.02)
  if embed:
    out["embedding_size"] = embed
  return out


def batch(vocab, seed, b=3, length=19):
  """Ids with right padding of varying amount; position 0 is never padding (bert4keras never masks it)."""
  rng = np.random.RandomState(seed)
  ids = rng.randint(1, vocab, size=(b, length)).astype(np.int32)
  for row in range(1, b):
    ids[row, length - 4 * row:] = 0
  return ids, rng.randint(0, 2, size=(b, length)).astype(np.int32)


# (version, vocab, hidden, layers, heads, intermediate, embedding_size): deliberately not 4H nor head 64.
CASES = {
    "v2": ("v2", 211, 48, 3, 4, 80, None),
    "v1": ("v1", 173, 40, 2, 2, 72, None),
    "v1-embedding-mapping": ("v1", 97, 32, 2, 4, 56, 24),
}


def _build_releases(root):
  """Writes the release folders and runs bert4keras on each (one subprocess for all)."""
  jobs = []
  for seed, (name, (version, vocab, hidden, layers, heads, inter, embed)) in enumerate(CASES.items()):
    folder = write_release(root / name, release_variables(version, vocab, hidden, layers, inter, embed, seed),
                           bert_config(version, vocab, hidden, layers, heads, inter, embed))
    ids, segments = batch(vocab, seed)
    jobs.append((folder, "roformer_v2" if version == "v2" else "roformer", ids, segments))
  bert4keras_logits.run(jobs, root)  # saves b4k_{ids,seg,logits}<n>.npy under root


def _read_releases(root):
  return {name: (root / name, np.load(root / f"b4k_ids{n}.npy"), np.load(root / f"b4k_seg{n}.npy"),
                 np.load(root / f"b4k_logits{n}.npy")) for n, name in enumerate(CASES)}


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
  """{case: (folder, ids, segments, bert4keras logits)}.

  Under pytest-xdist this module's tests spread over workers; the folders and the bert4keras
  run (the slow part) are made once per session, in the shared temp root, under a file lock.
  """
  if "PYTEST_XDIST_WORKER" not in os.environ:
    root = tmp_path_factory.mktemp("releases")
    _build_releases(root)
    return _read_releases(root)
  from filelock import FileLock
  root = tmp_path_factory.getbasetemp().parent / "tf-releases"
  with FileLock(f"{root}.lock"):
    if not (root / "done").exists():
      shutil.rmtree(root, ignore_errors=True)
      root.mkdir()
      _build_releases(root)
      (root / "done").touch()
  return _read_releases(root)


@pytest.mark.parametrize("name", list(CASES))
def test_mlm_logits_match_bert4keras(releases, name):
  folder, ids, segments, want = releases[name]
  model, params = rj.from_pretrained(folder)
  assert isinstance(model, rj.RoFormerForMaskedLM) and model.cfg.version == CASES[name][0]
  got = np.asarray(jax.jit(model.apply)({"params": params}, ids, segments))
  assert got.shape == want.shape
  delta = np.abs(got - want).max()
  print(f"bert4keras {name}: max |delta| = {delta:.2e}")
  assert delta <= TOL, f"{name}: max |delta| {delta}"


def test_scanned_and_encoder_only_loads(releases):
  folder, ids, segments, _ = releases["v2"]
  model, params = rj.from_pretrained(folder)
  scanned, sparams = rj.from_pretrained(folder, scan_layers=True)
  assert "layers" in sparams["roformer"]
  jax.tree_util.tree_map(np.testing.assert_array_equal, unstack_layers(sparams), params)
  np.testing.assert_allclose(scanned.apply({"params": sparams}, ids, segments),
                             model.apply({"params": params}, ids, segments), atol=TOL)
  encoder, _ = rj.from_pretrained(releases["v1"][0], with_mlm=False)
  assert isinstance(encoder, rj.RoFormerModel)


def test_port_folder_wins_over_tf_files(releases, tmp_path):
  # An export with --tf holds both layouts; config.json + safetensors is read (no TF needed).
  folder = shutil.copytree(releases["v1"][0], tmp_path / "both")
  (folder / "config.json").write_text("{}")
  with pytest.raises(rj.ConfigError, match=r"config\.json: missing key 'hidden_size'"):
    rj.from_pretrained(folder)


def _variant(src, dst, config_changes=None, drop=(), add=None):
  """A copy of a release with config keys changed and variables dropped / added."""
  import tensorflow as tf
  reader = tf.train.load_checkpoint(str(src / "bert_model.ckpt"))
  variables = {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map() if n not in drop}
  variables.update(add or {})
  config = json.loads((src / "bert_config.json").read_text())
  config.update(config_changes or {})
  return write_release(dst, variables, config)


def test_v1_weights_with_relu_config_disagree(releases, tmp_path):
  bad = _variant(releases["v1"][0], tmp_path / "x", {"hidden_act": "relu"})
  with pytest.raises(CheckpointError, match=r"bert_model\.ckpt has \d+ gamma/beta/bias tensors \(e\.g\. bert/"
                                            r".*as RoFormer v1, but .*bert_config\.json says hidden_act='relu'"):
    rj.from_pretrained(bad)


def test_v2_weights_with_gelu_config_disagree(releases, tmp_path):
  bad = _variant(releases["v2"][0], tmp_path / "x", {"hidden_act": "gelu"})
  with pytest.raises(CheckpointError, match=r"has no LayerNorm gamma/beta nor bias tensors, as RoFormerV2, "
                                            r"but .*hidden_act='gelu'"):
    rj.from_pretrained(bad)


def test_missing_and_mis_shaped_variables_are_named(releases, tmp_path):
  bad = _variant(releases["v1"][0], tmp_path / "x", drop=["bert/encoder/layer_1/output/dense/kernel"])
  with pytest.raises(CheckpointError, match=r"bert_model\.ckpt: 1 variable\(s\) do not match the model:\n"
                                            r"  missing variable bert/encoder/layer_1/output/dense/kernel "
                                            r"\(shape \(72, 40\)\)"):
    rj.from_pretrained(bad)
  bad = _variant(releases["v2"][0], tmp_path / "y", {"vocab_size": 210})
  with pytest.raises(CheckpointError, match=r"variable bert/embeddings/word_embeddings has shape \(211, 48\), "
                                            r"the config needs \(210, 48\)"):
    rj.from_pretrained(bad)


def test_unexpected_variables_are_named_and_training_state_is_skipped(releases, tmp_path):
  extra = {"bert/pooler/dense/kernel": np.zeros((48, 48), np.float32), "global_step": np.int64(7),
           "bert/encoder/layer_0/intermediate/dense/kernel/adam_m": np.zeros((48, 80), np.float32)}
  bad = _variant(releases["v2"][0], tmp_path / "x", add=extra)
  with pytest.raises(CheckpointError, match=r"1 variable\(s\) do not match the model:\n"
                                            r"  unexpected variable bert/pooler/dense/kernel \(48, 48\)\n"
                                            r"\(the model has no pooler"):
    rj.from_pretrained(bad)
  model, _ = rj.from_pretrained(bad, ignore=[r"^bert/pooler/"])
  assert model.cfg.version == "v2"


def test_config_errors_name_the_file(releases, tmp_path):
  bad = _variant(releases["v2"][0], tmp_path / "x", {"num_attention_heads": 5})
  with pytest.raises(rj.ConfigError, match=r"bert_config\.json: ModelConfig\.hidden_size \(48\) must be divisible"):
    rj.from_pretrained(bad)
  (bad / "bert_config.json").write_text("{\n oops")
  with pytest.raises(rj.ConfigError, match=r"bert_config\.json: invalid JSON at line 2"):
    rj.from_pretrained(bad)
  (bad / "bert_model.ckpt.data-00000-of-00001").write_bytes(b"")
  (bad / "bert_config.json").write_text(json.dumps(bert_config("v2", 211, 48, 3, 4, 80)))
  with pytest.raises(CheckpointError, match=r"bert_model\.ckpt: cannot read variable bert/embeddings/"):
    rj.from_pretrained(bad)


def test_missing_tensorflow_is_explained(monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorflow", None)  # makes `import tensorflow` raise ImportError
  with pytest.raises(ImportError, match=r"needs TensorFlow: pip install 'roformer-jax\[tf\]'"):
    tf_ckpt.TFCheckpoint("nowhere/bert_model.ckpt")


def test_tensorflow_is_imported_only_for_tf_checkpoints():
  code = ("import sys, roformer_jax, roformer_jax.export, roformer_jax.convert.tf_ckpt, roformer_jax.convert.load;"
          "assert 'tensorflow' not in sys.modules, 'tensorflow imported eagerly'")
  subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_tf_names_round_trip_through_our_writer(releases, tmp_path):
  """write_tf_checkpoint + tf_name + to_tf invert the import exactly."""
  folder = releases["v1-embedding-mapping"][0]
  model, params = rj.from_pretrained(folder)
  from roformer_jax.convert import torch_names
  from roformer_jax.convert.load import tree_get
  entries = torch_names.entries(model.cfg, with_mlm=True)
  out = tmp_path / "again"
  out.mkdir()
  tf_ckpt.write_tf_checkpoint(((tf_ckpt.tf_name(e), tf_ckpt.to_tf(e.kind, np.asarray(tree_get(params, e.path))))
                               for e in entries), out / "bert_model.ckpt")
  shutil.copy(folder / "bert_config.json", out)
  import tensorflow as tf
  original = tf.train.load_checkpoint(str(folder / "bert_model.ckpt"))
  again = tf.train.load_checkpoint(str(out / "bert_model.ckpt"))
  assert set(again.get_variable_to_shape_map()) == set(original.get_variable_to_shape_map())
  for name in original.get_variable_to_shape_map():
    np.testing.assert_array_equal(again.get_tensor(name), original.get_tensor(name), err_msg=name)
