"""Export: the PyTorch ports and bert4keras load what we write, with the same MLM logits as ours.

Also: sharded safetensors with an index, params in the scanned layout and as arrays sharded over
several devices, atomic writes, and errors that name the tensor or the file.
"""

import functools
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

# transformers (and the `roformer` package through it) import TensorFlow when it is installed,
# ~2.5 s per process for nothing: their TF models are never used here.
os.environ.setdefault("USE_TF", "0")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

import roformer_jax as rj  # noqa: E402
from roformer_jax import export  # noqa: E402
from roformer_jax.model import stack_layers  # noqa: E402

TOL = 1e-5
SMALL = dict(vocab_size=301, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
             max_position_embeddings=128)


def _perturb(module):
  # Fresh LayerNorms are exactly (1, 0) and biases 0: perturb them so a mapping slip shows.
  g = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for name, p in module.named_parameters():
      if "LayerNorm" in name or name.endswith("bias"):
        p.add_(0.1 * torch.randn(p.shape, generator=g))


def _vocab(folder, n):
  (Path(folder) / "vocab.txt").write_text("".join(f"[unused{i}]\n" for i in range(n)))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def port_folders(root):
  """`roformer`-package folders (v1, v2) as their users have them: save_pretrained + vocab.txt."""
  from roformer import RoFormerConfig, RoFormerForMaskedLM
  torch.manual_seed(0)
  out = {}
  for version, extra in [("v2", dict(norm_type="rms_norm", use_bias=False, hidden_act="relu")), ("v1", {})]:
    peer = RoFormerForMaskedLM(RoFormerConfig(**SMALL, **extra)).eval()
    _perturb(peer)
    peer.save_pretrained(root / f"port-{version}", safe_serialization=False)
    _vocab(root / f"port-{version}", SMALL["vocab_size"])
    out[version] = root / f"port-{version}"
  return out


def _random_model(version, scan=False, weight_scale=1.0, **overrides):
  """A freshly initialised model of ours: norms and biases perturbed, other weights times `weight_scale`."""
  return _cached_random_model(version, scan, weight_scale, tuple(sorted(overrides.items())))


@functools.lru_cache(maxsize=None)
def _cached_random_model(version, scan, weight_scale, overrides):
  fields = dict(version=version, vocab_size=203, hidden_size=48, num_layers=3, num_heads=4, intermediate_size=80)
  cfg = rj.ModelConfig(**{**fields, **dict(overrides)})
  rng = np.random.RandomState(0)

  def perturb(path, x):  # in numpy: eager jax ops would compile a kernel per leaf shape
    x = np.asarray(x)
    if path[-1].key in ("scale", "bias"):
      return x + 0.1 * rng.randn(*x.shape).astype(np.float32)
    return x * np.float32(weight_scale)
  params = jax.tree_util.tree_map_with_path(perturb, _init(cfg))
  if scan:
    cfg, params = cfg.replace(scan_layers=True), stack_layers(params, cfg.num_layers)
  return rj.RoFormerForMaskedLM(cfg), params


@functools.lru_cache(maxsize=None)
def _init(cfg):
  model = rj.RoFormerForMaskedLM(cfg)
  return jax.jit(functools.partial(rj.init_params, model))(jax.random.PRNGKey(7))  # eager init: ~10x slower


def _batch(vocab, seed=0, b=3, length=17):
  rng = np.random.RandomState(seed)
  ids = rng.randint(1, vocab, size=(b, length))
  for row in range(1, b):  # right padding; position 0 is never padding (bert4keras never masks it)
    ids[row, length - 5 * row:] = 0
  return ids, rng.randint(0, 2, size=(b, length))


def _ours(model, params, ids, segments):
  return np.asarray(jax.jit(model.apply)({"params": params}, ids, segments))


def _torch_logits(cls, folder, ids, segments):
  peer = cls.from_pretrained(folder).eval()
  with torch.no_grad():
    return peer(input_ids=torch.tensor(ids), token_type_ids=torch.tensor(segments),
                attention_mask=torch.tensor((ids != 0).astype(np.int64))).logits.numpy()


def _peers(version):
  import roformer
  import transformers
  peers = {"roformer": roformer.RoFormerForMaskedLM}
  if version == "v1":  # transformers' RoFormer is v1 only
    peers["transformers"] = transformers.RoFormerForMaskedLM
  return peers


def _check_peers(model, params, out, label, only=None):
  ids, segments = _batch(model.cfg.vocab_size)
  ours = _ours(model, params, ids, segments)
  for peer, cls in _peers(model.cfg.version).items():
    if only and peer != only:
      continue
    delta = np.abs(_torch_logits(cls, out, ids, segments) - ours).max()
    print(f"{label} -> {peer}: max |delta| = {delta:.2e}")
    assert delta <= TOL, f"{label} -> {peer}: max |delta| {delta}"


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_cli_export_of_a_port_folder_loads_in_the_ports(port_folders, root, version, capsys):
  out = root / f"cli-{version}"
  assert export.main(["--from", str(port_folders[version]), "--to", str(out)]) == 0
  assert "roformer-export: wrote" in capsys.readouterr().out
  assert sorted(os.listdir(out)) == ["config.json", "model.safetensors", "vocab.txt"]
  assert (out / "vocab.txt").read_text() == (port_folders[version] / "vocab.txt").read_text()
  config = json.loads((out / "config.json").read_text())
  assert config["max_position_embeddings"] == SMALL["max_position_embeddings"]  # taken from the source
  assert (config["norm_type"], config["use_bias"]) == (("layer_norm", True) if version == "v1" else ("rms_norm", False))
  model, params = rj.from_pretrained(port_folders[version])
  _check_peers(model, params, out, f"port {version}")
  again_model, again = rj.from_pretrained(out)  # and back: bit-identical
  assert again_model.cfg == model.cfg
  jax.tree_util.tree_map(np.testing.assert_array_equal, again, params)


@pytest.mark.parametrize("version, scan, overrides", [
    ("v1", False, dict(embedding_size=32)),  # exercises embeddings_project
    ("v2", True, {}),  # the nn.scan layout, unstacked on the way out
])
def test_export_of_a_random_init_model_loads_in_the_ports(root, version, scan, overrides):
  model, params = _random_model(version, scan, **overrides)
  out = export.export_hf(model.cfg, params, [f"t{i}" for i in range(model.cfg.vocab_size)],
                         root / f"random-{version}")
  _check_peers(model, params, out, f"random {version}{' scanned' if scan else ''}")
  _, again = rj.from_pretrained(out, scan_layers=scan)
  jax.tree_util.tree_map(np.testing.assert_array_equal, again, params)
  # The ports' sinusoidal table ships too (else they warn "newly initialized"), bit-equal to theirs.
  from transformers.models.roformer.modeling_roformer import RoFormerSinusoidalPositionalEmbedding
  table = RoFormerSinusoidalPositionalEmbedding(512, model.cfg.head_size).weight.numpy()
  np.testing.assert_array_equal(load_file(out / "model.safetensors")[export.EMBED_POSITIONS], table)


def test_tf_export_loads_in_bert4keras(port_folders, root):
  bert4keras_logits = pytest.importorskip("bert4keras_logits")
  pytest.importorskip("bert4keras")
  # bert4keras' LayerNorm epsilon is 1e-7 (ours and the ports': 1e-12, as at v1 training time). At
  # BERT's 0.02 init the embedding norm sees variance ~1e-3 and that gap alone moves logits by ~2e-5;
  # weights x7 give the near-unit activations of a trained model, where it is below 1e-6.
  sources = {"port v2": rj.from_pretrained(port_folders["v2"]),
             "random v1": _random_model("v1", weight_scale=7.0, embedding_size=32)}
  jobs, ours = [], []
  for n, (label, (model, params)) in enumerate(sources.items()):
    out = root / f"tf-{n}"
    if label == "port v2":  # through the command line's --tf
      assert export.main(["--from", str(port_folders["v2"]), "--to", str(out), "--tf"]) == 0
    else:
      export.export_hf(model.cfg, params, None, out, tf=True)
    assert {"bert_config.json", "bert_model.ckpt.index", "config.json"} <= set(os.listdir(out))
    ids, segments = _batch(model.cfg.vocab_size, seed=n)
    jobs.append((out, "roformer" if model.cfg.version == "v1" else "roformer_v2", ids, segments))
    ours.append(_ours(model, params, ids, segments))
    tf_only = shutil.copytree(out, root / f"tf-only-{n}", ignore=shutil.ignore_patterns("config.json", "model.*"))
    _, again = rj.from_pretrained(tf_only)  # our TF reader reads our TF writer
    jax.tree_util.tree_map(np.testing.assert_array_equal, again, params)
  for label, want, got in zip(sources, bert4keras_logits.run(jobs, root), ours):
    delta = np.abs(got - want).max()
    print(f"{label} --tf -> bert4keras: max |delta| = {delta:.2e}")
    assert delta <= TOL, f"{label}: max |delta| {delta}"


def test_sharded_safetensors_with_index(root):
  model, params = _random_model("v1")
  out = export.export_hf(model.cfg, params, None, root / "sharded", max_shard_size=120_000)
  index = json.loads((out / export.SAFETENSORS_INDEX).read_text())
  shards = sorted(set(index["weight_map"].values()))
  assert len(shards) >= 3 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
  assert not (out / export.SAFETENSORS).exists()
  assert sorted(f for f in os.listdir(out) if f.endswith(".safetensors")) == shards
  for shard in shards:
    tensors = load_file(out / shard)
    assert set(tensors) == {k for k, v in index["weight_map"].items() if v == shard}
    assert sum(t.nbytes for t in tensors.values()) <= 120_000 or len(tensors) == 1
  assert index["metadata"]["total_size"] == sum(t.nbytes for s in shards for t in load_file(out / s).values())
  _, again = rj.from_pretrained(out)
  jax.tree_util.tree_map(np.testing.assert_array_equal, again, params)
  _check_peers(model, params, out, "sharded v1", only="transformers")


# Runs in its own process: the device count is fixed when JAX starts.
SHARDED_EXPORT = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import roformer_jax as rj
    from roformer_jax import export
    from roformer_jax.model import stack_layers
    cfg = rj.ModelConfig(version="v2", vocab_size=203, hidden_size=48, num_layers=3, num_heads=4,
                         intermediate_size=80, scan_layers=True)
    params = rj.init_params(rj.RoFormerForMaskedLM(cfg.replace(scan_layers=False)), jax.random.PRNGKey(7))
    params = jax.tree_util.tree_map(np.asarray, stack_layers(params, cfg.num_layers))
    mesh = Mesh(np.array(jax.devices()).reshape(2, 2), ("data", "model"))
    def place(x):  # FSDP x tensor-like: split the two trailing axes wherever they divide
      spec = [None] * x.ndim
      for axis, name in zip(range(x.ndim - 1, max(x.ndim - 3, -1), -1), ("model", "data")):
        if x.shape[axis] % 2 == 0:
          spec[axis] = name
      return jax.device_put(x, NamedSharding(mesh, P(*spec)))
    sharded = jax.tree_util.tree_map(place, params)
    assert any(len(x.sharding.device_set) == 4 and not x.sharding.is_fully_replicated
               for x in jax.tree_util.tree_leaves(sharded))
    with jax.transfer_guard_device_to_device("disallow"):  # no gathering onto one device
      export.export_hf(cfg, sharded, None, sys.argv[1], max_shard_size=60_000)
    export.export_hf(cfg, params, None, sys.argv[2], max_shard_size=60_000)
""")


def test_export_from_arrays_sharded_over_devices(root):
  a, b = root / "from-sharded", root / "from-numpy"
  subprocess.run([sys.executable, "-c", SHARDED_EXPORT, str(a), str(b)],
                 check=True, timeout=180, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert sorted(os.listdir(a)) == sorted(os.listdir(b))
  for name in os.listdir(a):
    if name.endswith(".safetensors"):
      want = load_file(b / name)
      got = load_file(a / name)
      assert set(got) == set(want)
      for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def _snapshot(folder):
  return {p.name: p.read_bytes() for p in Path(folder).iterdir()}


def test_interrupted_export_leaves_no_complete_looking_folder(root, monkeypatch):
  model, params = _random_model("v2")
  out = root / "atomic"
  export.export_hf(model.cfg, params, None, out, max_shard_size=60_000)
  before = _snapshot(out)
  calls = []

  def crash(*args, **kwargs):  # the second shard write dies
    calls.append(1)
    if len(calls) == 2:
      raise OSError("disk full (simulated)")
    return real_save(*args, **kwargs)

  import safetensors.numpy
  real_save = safetensors.numpy.save_file
  monkeypatch.setattr(safetensors.numpy, "save_file", crash)
  with pytest.raises(OSError, match="simulated"):
    export.export_hf(model.cfg, params, None, out, overwrite=True, max_shard_size=60_000)
  assert _snapshot(out) == before  # the previous export is untouched
  assert sorted(p.name for p in root.iterdir() if p.name.startswith(".atomic")) == []  # temp dir cleaned up

  # A hard crash skips all cleanup: what is left is a dot-named temp folder, never OUT.
  calls.clear()
  monkeypatch.setattr(export.shutil, "rmtree", lambda *a, **k: None)
  with pytest.raises(OSError, match="simulated"):
    export.export_hf(model.cfg, params, None, root / "fresh", max_shard_size=60_000)
  assert not (root / "fresh").exists()
  leftovers = [p for p in root.iterdir() if p.name.startswith(".fresh.tmp-")]
  assert len(leftovers) == 1 and not (leftovers[0] / export.SAFETENSORS_INDEX).exists()


def test_overwrite_replaces_atomically_and_is_opt_in(root):
  model, params = _random_model("v2")
  out = export.export_hf(model.cfg, params, None, root / "twice")
  with pytest.raises(FileExistsError, match=r"twice already exists; pass overwrite=True \(--overwrite\)"):
    export.export_hf(model.cfg, params, None, out)
  other, other_params = _random_model("v2", num_layers=2)
  export.export_hf(other.cfg, other_params, None, out, overwrite=True)
  assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 2
  assert [p.name for p in root.iterdir() if p.name.startswith(".twice")] == []


def test_param_errors_name_the_tensor(root):
  model, params = _random_model("v1")
  broken = jax.tree_util.tree_map(lambda x: x, params)
  del broken["roformer"]["layer_1"]["ffn"]["output"]["kernel"]
  broken["roformer"]["layer_0"]["attention"]["query"]["bias"] = np.zeros((4, 5), np.float32)
  broken["roformer"]["pooler"] = {"kernel": np.zeros((48, 48), np.float32)}
  with pytest.raises(ValueError) as e:
    export.export_hf(model.cfg, broken, None, root / "bad")
  message = str(e.value)
  assert "missing param roformer/layer_1/ffn/output/kernel (for roformer.encoder.layer.1.output.dense.weight)" \
      in message
  assert "param roformer/layer_0/attention/query/bias has shape (4, 5), the config needs (4, 12)" in message
  assert "unexpected param roformer/pooler/kernel (48, 48)" in message
  assert not (root / "bad").exists()
  scanned, sparams = _random_model("v2", scan=True)
  with pytest.raises(ValueError, match=r"param roformer/layers/ffn/output/kernel stacks 3 layers, the config has 4"):
    export.export_hf(scanned.cfg.replace(num_layers=4), sparams, None, root / "bad")


def test_vocab_and_config_errors(root, tmp_path):
  model, params = _random_model("v2")
  with pytest.raises(ValueError, match=r"vocab list has 204 tokens, more than the model's vocab_size=203"):
    export.export_hf(model.cfg, params, [str(i) for i in range(204)], tmp_path / "a")
  with pytest.raises(FileNotFoundError, match=r"nowhere\.txt: vocab file not found"):
    export.export_hf(model.cfg, params, tmp_path / "nowhere.txt", tmp_path / "b")
  with pytest.raises(ValueError, match=r"rope_base=500.0: the ports and bert4keras hard-code 10000"):
    export.export_hf(model.cfg.replace(rope_base=500.0), params, None, tmp_path / "c")
  assert not any(tmp_path.iterdir())


def test_cli_errors(port_folders, tmp_path, capsys):
  bare = shutil.copytree(port_folders["v2"], tmp_path / "bare", ignore=shutil.ignore_patterns("vocab.txt"))
  assert export.main(["--from", str(bare), "--to", str(tmp_path / "o")]) == 2
  assert "bare: no vocab.txt found for this checkpoint; pass --vocab FILE" in capsys.readouterr().err
  step = tmp_path / "workdir" / "checkpoints" / "100"  # a pretraining step folder: the workdir's vocab
  step.mkdir(parents=True)
  shutil.copy(port_folders["v2"] / "vocab.txt", tmp_path / "workdir")
  assert export.find_vocab(step) == tmp_path / "workdir" / "vocab.txt"
  vocab = port_folders["v2"] / "vocab.txt"
  assert export.main(["--from", str(bare), "--to", str(tmp_path / "o"), "--vocab", str(vocab)]) == 0
  assert export.main(["--from", str(bare), "--to", str(tmp_path / "o"), "--vocab", str(vocab)]) == 2
  assert "o already exists; pass overwrite=True (--overwrite)" in capsys.readouterr().err
  assert export.main(["--from", str(tmp_path / "none"), "--to", str(tmp_path / "p"), "--vocab", str(vocab)]) == 2
  assert f"--from {tmp_path / 'none'}: does not exist" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    export.main(["--from", str(bare), "--to", str(tmp_path / "q"), "--max-shard-size", "5 parsecs"])
  assert "not a size: '5 parsecs'" in capsys.readouterr().err
  assert export.parse_size("5GB") == 5 * 10**9 and export.parse_size("64KiB") == 65536
  assert export.parse_size("1000") == 1000


def test_cli_bad_paths_and_sizes_fail_in_one_line_before_loading(tmp_path, capsys, monkeypatch):
  """Each bad flag: exit 2 and one `roformer-export: error:` line naming it; nothing is loaded or written."""
  src, plain = tmp_path / "src", tmp_path / "plain.txt"
  src.mkdir()  # an empty folder: the checks run before from_pretrained would reject it
  plain.write_text("x")

  def error(*args: str) -> str:
    assert export.main(["--from", str(src), "--to", str(tmp_path / "out"), *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("roformer-export: error: "), lines
    return lines[0]

  assert error("--from", str(tmp_path / "nonexist")).endswith(f"--from {tmp_path / 'nonexist'}: does not exist")
  assert error("--from", str(plain)).endswith(f"--from {plain}: not a checkpoint folder (it is a file)")
  assert error("--vocab", str(tmp_path / "v.txt")).endswith(f"--vocab {tmp_path / 'v.txt'}: does not exist")
  assert error("--to", str(plain), "--overwrite").endswith(f"--to {plain}: an existing file, not a folder")
  assert error("--to", str(plain / "x" / "y")).endswith(f"--to {plain / 'x' / 'y'}: {plain} is a file, not a folder")

  def refuse(*args, **kwargs):  # what /sys or a read-only mount answers (a chmod does not stop root)
    raise PermissionError(1, "Operation not permitted")
  with monkeypatch.context() as m:
    m.setattr(export.tempfile, "mkdtemp", refuse)
    assert error("--to", str(tmp_path / "a" / "b")).endswith(
        f"--to {tmp_path / 'a' / 'b'}: cannot write in {tmp_path} (Operation not permitted)")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.txt", "src"]  # no probe folder left behind

  for size in ("0", "-5", "0.1B"):  # argparse's own error: usage, then the line naming the flag
    with pytest.raises(SystemExit) as e:
      export.main(["--from", str(src), "--to", str(tmp_path / "out"), f"--max-shard-size={size}"])
    assert e.value.code == 2 and "argument --max-shard-size:" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    export.main(["--from", str(src), "--to", str(tmp_path / "out"), "--max-position-embeddings", "0"])
  assert "argument --max-position-embeddings: must be at least 1, got 0" in capsys.readouterr().err
  with pytest.raises(ValueError, match="max_shard_size must be at least 1 byte, got 0"):
    export.export_hf(rj.get_config("tiny"), {}, None, tmp_path / "api", max_shard_size=0)


def test_tokenizer_config_makes_auto_tokenizer_match_ours(tmp_path):
  """transformers' AutoTokenizer on an exported folder gives our ids: BertTokenizer for a char vocab (without
  tokenizer_config.json it took RoFormerTokenizer, whose jieba cuts split "９７" into 9, 7 instead of 9, ##7),
  RoFormerTokenizer for a jieba word vocab; do_lower_case from the source folder's tokenizer_config.json."""
  import itertools
  import transformers
  from roformer_jax import corpus, tokenization
  lines = list(itertools.islice(corpus.people_daily_lines(), 1500)) + list(itertools.islice(corpus.review_lines(), 1500))
  texts = ["在’９７中国旅游年基础上，改革开放２０年来", "iPhone 15 Pro售价7999元，比去年贵了100元。", "ＡＢＣ全角１２３和abc123混排",
           "《深度学习》发表于2024年!!", "Hello World! 你好，世界……"] + lines[::100]
  chars = tokenization.build_char_vocab(lines)
  vocabs = {"char": chars, "word": tokenization.build_char_vocab(lines, extra_words=tokenization.top_jieba_words(lines, 2000))}
  for name, tokens in vocabs.items():
    src = tmp_path / f"src-{name}"
    src.mkdir()
    tokenization.write_vocab(tokens, src / "vocab.txt")
  upper = tmp_path / "src-upper"
  shutil.copytree(tmp_path / "src-char", upper)
  (upper / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": False}))
  cfg = rj.ModelConfig(version="v2", vocab_size=max(map(len, vocabs.values())), hidden_size=16, num_layers=1,
                       num_heads=2, intermediate_size=16)
  params = _init(cfg)
  for name, vocab in [("char", tmp_path / "src-char" / "vocab.txt"), ("word", tmp_path / "src-word" / "vocab.txt"),
                      ("upper", upper / "vocab.txt"), ("object", tokenization.load_tokenizer(tmp_path / "src-word"))]:
    out = export.export_hf(cfg, params, vocab, tmp_path / f"out-{name}", max_position_embeddings=256)
    ours = vocab if name == "object" else tokenization.load_tokenizer(vocab)
    theirs = transformers.AutoTokenizer.from_pretrained(out)
    word = name in ("word", "object")
    assert type(theirs).__name__ == ("RoFormerTokenizerFast" if word else "BertTokenizerFast")
    assert (theirs.do_lower_case if hasattr(theirs, "do_lower_case") else theirs.init_kwargs["do_lower_case"]) == (
        name != "upper") and theirs.model_max_length == 256
    for text in texts:
      assert theirs(text)["input_ids"] == ours.encode(text).ids, (name, text)
    again = tokenization.load_tokenizer(out)  # and ours reads the folder back as it was
    assert (again.pre_tokenize, again.do_lower_case) == (ours.pre_tokenize, ours.do_lower_case)
  sp = tokenization.train_sentencepiece(iter(lines[:200]), tmp_path / "sp", vocab_size=1500, hard_vocab_limit=False)
  out = export.export_hf(cfg, params, tokenization.SentencePieceTokenizer(sp), tmp_path / "out-sp")
  assert not (out / "tokenizer_config.json").exists()  # its vocab.txt is no WordPiece vocab: claim no class
