"""Export to an HF-style folder that the PyTorch ports load, and optionally to the bert4keras TF layout.

    python -m roformer_jax.export --from DIR --to OUT [--tf]

writes OUT/config.json (the `roformer` package's format: `norm_type`/`use_bias` tell v1 from v2),
OUT/model.safetensors (or shards plus model.safetensors.index.json) with the ports' tensor names,
OUT/vocab.txt and OUT/tokenizer_config.json (so transformers' AutoTokenizer picks BertTokenizer for a char
vocab, RoFormerTokenizer for a jieba word vocab); `--tf` adds bert_config.json and bert_model.ckpt.* for bert4keras.

Tensors go to the host one at a time (from each addressable shard of a sharded array), so no
device ever holds the whole model; host memory peaks at one safetensors shard. The folder is
written under a temporary sibling name and renamed into place at the end: an interrupted export
leaves no folder at OUT that looks complete, and a previous export there stays intact.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np

from roformer_jax import mixers
from roformer_jax.argtypes import positive_int
from roformer_jax.config import ModelConfig
from roformer_jax.convert import tf_ckpt, torch_names

DEFAULT_MAX_SHARD_SIZE = 5 * 10**9  # transformers' default "5GB"
DEFAULT_MAX_POSITIONS = 512
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
# The ports' sinusoidal table. Not a weight, but a folder without it makes `from_pretrained` warn
# that the model was "newly initialized" and should be trained.
EMBED_POSITIONS = torch_names.IGNORED[0]
# The `roformer` package links decoder.bias to predictions.bias only at construction, and
# from_pretrained replaces the parameter, so it loads a v1 head's output bias from this name;
# the decoder weight is re-tied by every loader and is left out.
DECODER_BIAS = "cls.predictions.decoder.bias"


# ----------------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------------
def check_exportable(cfg: ModelConfig, tf: bool = False) -> None:
  """Raises ValueError if `cfg` has no port layout to export to."""
  if cfg.attention in mixers.TOKEN_MIXERS or cfg.attention in mixers.BLOCKS:
    raise ValueError(f"ModelConfig.attention={cfg.attention!r} replaces self-attention with other weights; "
                     "only softmax-attention models (any attention function) have a port layout")
  if cfg.rope_base != 10000.0:
    raise ValueError(f"ModelConfig.rope_base={cfg.rope_base}: the ports and bert4keras hard-code 10000")
  if tf and cfg.rotary_value:
    raise ValueError("ModelConfig.rotary_value=True: bert4keras' RoFormer has no rotary value option")


def hf_config(cfg: ModelConfig, with_mlm: bool = True,
              max_position_embeddings: int = DEFAULT_MAX_POSITIONS) -> dict[str, Any]:
  """config.json in the `roformer` package's format; `transformers` reads the same file for v1.

  `max_position_embeddings` only sizes the ports' sinusoidal table (our RoPE has no limit).
  """
  v1 = cfg.version == "v1"
  return {
      "architectures": ["RoFormerForMaskedLM" if with_mlm else "RoFormerModel"],
      "model_type": "roformer",
      "vocab_size": cfg.vocab_size,
      "embedding_size": cfg.embed_size,
      "hidden_size": cfg.hidden_size,
      "num_hidden_layers": cfg.num_layers,
      "num_attention_heads": cfg.num_heads,
      "intermediate_size": cfg.intermediate_size,
      "hidden_act": "gelu" if v1 else "relu",
      "hidden_dropout_prob": cfg.hidden_dropout,
      "attention_probs_dropout_prob": cfg.attention_dropout,
      "max_position_embeddings": max_position_embeddings,
      "type_vocab_size": cfg.type_vocab_size,
      "initializer_range": 0.02,
      "layer_norm_eps": cfg.norm_eps,
      "pad_token_id": cfg.pad_token_id,
      "rotary_value": cfg.rotary_value,
      "use_cache": True,
      "norm_type": "layer_norm" if v1 else "rms_norm",  # the `roformer` package's v2 switch
      "use_bias": v1,
      "tie_word_embeddings": True,
      "torch_dtype": "float32",
  }


def sinusoidal_table(num_positions: int, dim: int) -> np.ndarray:
  """The ports' `embed_positions` table [num_positions, dim]: sin in the first half, cos in the second.

  Same float64 formula as RoFormerSinusoidalPositionalEmbedding._init_weight, so it is bit-equal.
  """
  pos = np.arange(num_positions, dtype=np.float64)[:, None]
  j = np.arange(dim)
  enc = pos / np.power(10000, 2 * (j // 2) / dim)
  return np.concatenate([np.sin(enc[:, 0::2]), np.cos(enc[:, 1::2])], axis=1).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Params -> host tensors, one at a time
# ----------------------------------------------------------------------------------------------
def _leaves(tree: Mapping, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
  for k, v in tree.items():
    if isinstance(v, Mapping):
      yield from _leaves(v, prefix + (k,))
    else:
      yield prefix + (k,), v


def _plan(cfg: ModelConfig, params: dict) -> tuple[bool, list[tuple[torch_names.Entry, Any, int | None]]]:
  """(with_mlm, [(entry, leaf, layer index into a scanned leaf or None)]), checked against the config.

  Scanned entries are grouped by leaf (in path order, so shard contents are reproducible): a leaf
  gathered across processes is then gathered once.
  """
  params = nn.meta.unbox(params)
  with_mlm = "roformer" in params  # RoFormerForMaskedLM nests the encoder; v2's head has no weights
  tree = params if with_mlm else {"roformer": params}
  expected = tf_ckpt.param_shapes(cfg.replace(scan_layers=False), with_mlm)
  leaves = dict(_leaves(tree))
  used, plan, errors = set(), [], []
  for e in torch_names.entries(cfg, with_mlm):
    path, layer = e.path, None
    m = re.fullmatch(r"layer_(\d+)", path[1]) if len(path) > 1 else None
    if path not in leaves and m and path[0] == "roformer":
      path, layer = ("roformer", "layers") + path[2:], int(m.group(1))  # the nn.scan layout
    leaf = leaves.get(path)
    if leaf is None:
      errors.append(f"missing param {'/'.join(e.path)} (for {e.torch_name})")
      continue
    used.add(path)
    shape = tuple(leaf.shape[1:] if layer is not None else leaf.shape)
    want = tuple(functools.reduce(lambda tree, key: tree[key], e.path, expected).shape)
    if layer is not None and (leaf.shape[0] != cfg.num_layers):
      errors.append(f"param {'/'.join(path)} stacks {leaf.shape[0]} layers, the config has {cfg.num_layers}")
    elif shape != want:
      errors.append(f"param {'/'.join(e.path)} has shape {shape}, the config needs {want}")
    plan.append((e, leaf, layer, path))
  errors += [f"unexpected param {'/'.join(p)} {tuple(leaves[p].shape)}" for p in sorted(leaves) if p not in used]
  errors = list(dict.fromkeys(errors))  # a scanned leaf reports once, not once per layer
  if errors:
    raise ValueError(f"params do not match the RoFormer {cfg.version} config ({len(errors)} problem(s)):\n  " +
                     "\n  ".join(errors))
  plan.sort(key=lambda item: (item[2] is not None, item[3] if item[2] is not None else ()))  # stable
  return with_mlm, [item[:3] for item in plan]


class _HostFetcher:
  """One tensor (or one layer of a stacked tensor) at a time, as float32 numpy.

  A fully addressable jax.Array is copied shard by shard (each block once, whatever its
  replication), so nothing is gathered on a device. An array spanning processes is all-gathered
  to the host: a collective, so every process must run the export (only process 0 writes). A
  stacked (scanned) leaf is fetched once and kept while its layers are consumed, which `_plan`'s
  ordering makes consecutive: host memory holds at most one stacked leaf.
  """

  def __init__(self):
    self._stacked = (None, None)

  def __call__(self, x: Any, layer: int | None) -> np.ndarray:
    if layer is None:
      return self._to_host(x)
    if self._stacked[0] is not x:
      self._stacked = (x, self._to_host(x))
    return self._stacked[1][layer]

  @staticmethod
  def _to_host(x: Any) -> np.ndarray:
    if not isinstance(x, jax.Array):
      return np.asarray(x, np.float32)
    if not x.is_fully_addressable:
      from jax.experimental import multihost_utils
      return np.asarray(multihost_utils.process_allgather(x, tiled=True), np.float32)
    out = np.empty(x.shape, np.float32)
    seen = set()
    for shard in x.addressable_shards:
      block = tuple(s.indices(n) for s, n in zip(shard.index, x.shape))
      if block not in seen:  # replicas hold the same block
        seen.add(block)
        out[tuple(slice(*b) for b in block)] = np.asarray(jax.device_get(shard.data), np.float32)
    return out


def _host_tensors(plan) -> Iterator[tuple[torch_names.Entry, np.ndarray]]:
  fetch = _HostFetcher()
  for entry, leaf, layer in plan:
    yield entry, fetch(leaf, layer)


# ----------------------------------------------------------------------------------------------
# Writers
# ----------------------------------------------------------------------------------------------
class _SafetensorsWriter:
  """Packs tensors into shards of at most `max_shard_size` bytes (a larger tensor gets its own)."""

  def __init__(self, folder: Path, max_shard_size: int):
    self.folder, self.max_shard_size = folder, max_shard_size
    self._pending: dict[str, np.ndarray] = {}
    self._pending_bytes = 0
    self._shards: list[tuple[Path, list[str]]] = []
    self.total_size = 0

  def add(self, name: str, value: np.ndarray) -> None:
    value = np.ascontiguousarray(value, np.float32)
    if self._pending and self._pending_bytes + value.nbytes > self.max_shard_size:
      self._flush()
    self._pending[name] = value
    self._pending_bytes += value.nbytes
    self.total_size += value.nbytes

  def _flush(self) -> None:
    from safetensors.numpy import save_file
    path = self.folder / f"part-{len(self._shards)}.safetensors"
    # transformers refuses safetensors files without a "format" entry.
    save_file(self._pending, str(path), metadata={"format": "pt"})
    self._shards.append((path, list(self._pending)))
    self._pending, self._pending_bytes = {}, 0

  def close(self) -> None:
    if self._pending or not self._shards:
      self._flush()
    if len(self._shards) == 1:
      self._shards[0][0].rename(self.folder / SAFETENSORS)
      return
    weight_map = {}
    n = len(self._shards)
    for i, (path, names) in enumerate(self._shards):
      final = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
      path.rename(self.folder / final)
      weight_map.update(dict.fromkeys(names, final))
    index = {"metadata": {"total_size": self.total_size}, "weight_map": dict(sorted(weight_map.items()))}
    (self.folder / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2) + "\n")


def _write_vocab(vocab: Any, cfg: ModelConfig, path: Path) -> None:
  """vocab.txt from a file path, a tokenizer (`vocab_file`, or `vocab_size` + `id_to_token`) or tokens."""
  if isinstance(vocab, (str, os.PathLike)) or hasattr(vocab, "vocab_file"):
    src = Path(getattr(vocab, "vocab_file", vocab))
    if not src.is_file():
      raise FileNotFoundError(f"{src}: vocab file not found")
    shutil.copyfile(src, path)
    count, what = len(src.read_text(encoding="utf-8").splitlines()), str(src)
  else:
    if hasattr(vocab, "id_to_token"):
      tokens = [vocab.id_to_token(i) for i in range(vocab.vocab_size)]
    else:
      tokens = [str(t) for t in vocab]
    path.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    count, what = len(tokens), type(vocab).__name__
  # Fewer tokens than rows is fine (vocab_size padded for the hardware); more would be unreachable ids.
  if count > cfg.vocab_size:
    raise ValueError(f"vocab {what} has {count} tokens, more than the model's vocab_size={cfg.vocab_size}")


def tokenizer_config(vocab: Any, vocab_txt: Path, max_position_embeddings: int) -> dict[str, Any] | None:
  """tokenizer_config.json for a WordPiece vocab, or None (a SentencePiece model, a vocab.txt that is no BERT vocab).

  Without it, transformers' AutoTokenizer takes the class from model_type "roformer": RoFormerTokenizer(Fast),
  which cuts jieba words first. Right for the v1 word models, but a char vocab (RoFormerV2, v1-char) then
  splits full-width digits and letters ("９７" -> 9, 7 instead of 9, ##7) unlike the BERT tokenizer it
  was trained with. `vocab`: what export_hf got; a path is judged as `load_tokenizer` judges it (its folder's
  tokenizer_config.json, else the vocab itself); `vocab_txt`: the vocab.txt written.
  """
  from roformer_jax import tokenization
  if isinstance(vocab, tokenization.SentencePieceTokenizer):
    return None
  if not isinstance(vocab, tokenization.WordPieceTokenizer):
    src = vocab if isinstance(vocab, (str, os.PathLike)) else getattr(vocab, "vocab_file", vocab_txt)
    try:
      vocab = tokenization.load_tokenizer(src)
    except ValueError:  # no [PAD] / [UNK] ...: nothing transformers could tokenize with
      return None
    if not isinstance(vocab, tokenization.WordPieceTokenizer):
      return None
  return {"tokenizer_class": "RoFormerTokenizer" if vocab.pre_tokenize == "jieba" else "BertTokenizer",
          "do_lower_case": vocab.do_lower_case, "model_max_length": max_position_embeddings}


@contextlib.contextmanager
def _atomic_dir(out: Path, overwrite: bool, enabled: bool = True) -> Iterator[Path | None]:
  """Yields a temporary sibling of `out`; renames it to `out` only if the block completes."""
  if not enabled:
    yield None
    return
  if out.exists() and not (overwrite and out.is_dir()):
    raise FileExistsError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")
  out.parent.mkdir(parents=True, exist_ok=True)
  # A dot-name in the same directory: same filesystem (so rename is atomic), and a crash leaves
  # `.OUT.tmp-*`, which nothing mistakes for an export.
  tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
  try:
    yield tmp
    if out.exists():  # rename(2) cannot replace a non-empty directory: move the old one aside first
      old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
      os.replace(out, old / out.name)
      os.replace(tmp, out)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.replace(tmp, out)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful rename


# ----------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------
def export_hf(model_cfg: ModelConfig, params: dict, vocab_file_or_tokenizer: Any, out_dir: str | os.PathLike, *,
              tf: bool = False, max_shard_size: int = DEFAULT_MAX_SHARD_SIZE,
              max_position_embeddings: int = DEFAULT_MAX_POSITIONS, overwrite: bool = False) -> Path:
  """Writes `out_dir` in the ports' HF layout (and bert4keras' with `tf`); returns its path.

  Args:
    model_cfg: the model's config (v1 or v2; any softmax attention function).
    params: RoFormerForMaskedLM params (`{"roformer": ..., "mlm": ...}`) or the bare encoder's,
      per-layer or scanned (`layers` stacked on a leading axis), numpy or (sharded) jax arrays.
    vocab_file_or_tokenizer: a vocab.txt path, a tokenizer with `vocab_file` or `id_to_token`, a list
      of tokens, or None for no vocab.txt.
    out_dir: the folder to create; replaced as a whole only with `overwrite`.
    tf: also write bert_config.json + bert_model.ckpt.* (needs tensorflow).
    max_shard_size: bytes per safetensors file; past it, shards + model.safetensors.index.json.
    max_position_embeddings: the ports' sinusoidal table size (their maximum input length).
    overwrite: replace an existing `out_dir` (atomically).

  In a multi-process run every process must call this (arrays spanning processes are gathered
  with a collective); only process 0 writes.
  """
  cfg = model_cfg
  if max_shard_size < 1:  # 0 would silently write one file per tensor
    raise ValueError(f"max_shard_size must be at least 1 byte, got {max_shard_size}")
  check_exportable(cfg, tf)
  with_mlm, plan = _plan(cfg, params)
  out = Path(out_dir).absolute()
  primary = jax.process_index() == 0
  with _atomic_dir(out, overwrite, enabled=primary) as tmp:
    if primary:
      (tmp / "config.json").write_text(json.dumps(hf_config(cfg, with_mlm, max_position_embeddings), indent=2) + "\n")
      if vocab_file_or_tokenizer is not None:
        _write_vocab(vocab_file_or_tokenizer, cfg, tmp / "vocab.txt")
        tok_config = tokenizer_config(vocab_file_or_tokenizer, tmp / "vocab.txt", max_position_embeddings)
        if tok_config is not None:
          (tmp / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")
      weights = _SafetensorsWriter(tmp, max_shard_size)
    for entry, value in _host_tensors(plan):
      if primary:
        weights.add(entry.torch_name, torch_names.to_torch(entry.kind, value))
        if entry.torch_name == "cls.predictions.bias":
          weights.add(DECODER_BIAS, value)
    if primary:
      weights.add(EMBED_POSITIONS, sinusoidal_table(max_position_embeddings, cfg.head_size))
      weights.close()
    if tf:  # a second pass over the params: TF keeps its own copy, so nothing is cached here
      tensors = ((tf_ckpt.tf_name(e), tf_ckpt.to_tf(e.kind, v)) for e, v in _host_tensors(plan))
      if primary:
        bert = tf_ckpt.bert_config(cfg, max_position_embeddings)
        (tmp / tf_ckpt.CONFIG_FILE).write_text(json.dumps(bert, indent=2) + "\n")
        tf_ckpt.write_tf_checkpoint(tensors, tmp / tf_ckpt.CHECKPOINT_PREFIX)
      else:
        for _ in tensors:
          pass
  return out


def find_vocab(source: str | os.PathLike) -> Path | None:
  """vocab.txt in a checkpoint folder, or in the pretraining workdir above a `checkpoints/<step>` folder."""
  source = Path(source)
  folders = [source]
  if source.parent.name == "checkpoints":
    folders.append(source.parent.parent)
  for folder in folders:
    if (folder / "vocab.txt").is_file():
      return folder / "vocab.txt"
  return None


def _source_max_positions(source: Path) -> int:
  for name in ("config.json", tf_ckpt.CONFIG_FILE):
    try:
      return int(json.loads((source / name).read_text())["max_position_embeddings"])
    except (OSError, ValueError, KeyError, TypeError):
      continue
  return DEFAULT_MAX_POSITIONS


def parse_size(text: str) -> int:
  """'5GB' -> 5 * 10**9 (decimal units, as transformers); '200KiB' -> 204800; '1000' -> 1000."""
  m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B)?\s*", text, re.IGNORECASE)
  if not m:
    raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 5GB, 500MB, 64KiB, 1000)")
  unit = (m.group(2) or "B").upper()
  powers = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
            "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
  if unit not in powers:
    raise argparse.ArgumentTypeError(f"unknown size unit in {text!r}")
  size = int(float(m.group(1)) * powers[unit])
  if size < 1:
    raise argparse.ArgumentTypeError(f"{text!r} is not a positive size")
  return size


def _check_cli_paths(source: Path, out: Path, vocab: str | None) -> str | None:
  """The first problem with --from, --vocab or --to, or None; checked before the (slow) checkpoint load."""
  if not source.expanduser().exists():
    return f"--from {source}: does not exist"
  if not source.expanduser().is_dir():
    return f"--from {source}: not a checkpoint folder (it is a file)"
  if vocab is not None and not Path(vocab).is_file():
    return f"--vocab {vocab}: {'not a file' if Path(vocab).exists() else 'does not exist'}"
  if out.exists() and not out.is_dir():
    return f"--to {out}: an existing file, not a folder"
  parent = out.absolute().parent
  while not parent.exists():
    parent = parent.parent
  if not parent.is_dir():
    return f"--to {out}: {parent} is a file, not a folder"
  # Permissions alone do not tell (root, read-only mounts, /sys): try the temporary sibling the export makes.
  try:
    os.rmdir(tempfile.mkdtemp(prefix=".roformer-export-probe-", dir=parent))
  except OSError as e:
    return f"--to {out}: cannot write in {parent} ({e.strerror or e})"
  return None


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="roformer-export",
      description="Export any checkpoint that roformer_jax.from_pretrained reads to an HF-style folder "
                  "(config.json, model.safetensors, vocab.txt) that the `roformer` and `transformers` "
                  "PyTorch ports load; --tf adds the bert4keras TF layout.")
  parser.add_argument("--from", dest="source", required=True, metavar="DIR", help="checkpoint folder to read")
  parser.add_argument("--to", dest="out", required=True, metavar="OUT", help="folder to create")
  parser.add_argument("--tf", action="store_true", help="also write bert_config.json + bert_model.ckpt.*")
  parser.add_argument("--vocab", metavar="FILE", help="vocab.txt to ship (default: the one in DIR or its parent)")
  parser.add_argument("--max-shard-size", type=parse_size, default=DEFAULT_MAX_SHARD_SIZE, metavar="SIZE",
                      help="bytes per safetensors file, e.g. 5GB (default) or 500MB")
  parser.add_argument("--max-position-embeddings", type=positive_int, default=None, metavar="N",
                      help="the ports' position table size (default: from DIR's config, else 512)")
  parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
  args = parser.parse_args(argv)
  problem = _check_cli_paths(Path(args.source), Path(args.out), args.vocab)
  if problem:
    print(f"roformer-export: error: {problem}", file=sys.stderr)
    return 2

  from roformer_jax import from_pretrained, startup
  startup.quiet_tpu_probe()  # before JAX starts its backends (this module imports JAX, which is fine)
  from roformer_jax.config import ConfigError
  from roformer_jax.convert.load import CheckpointError
  source = Path(args.source)
  try:
    vocab = Path(args.vocab) if args.vocab else find_vocab(source)
    if vocab is None:
      raise FileNotFoundError(f"{source}: no vocab.txt found for this checkpoint; pass --vocab FILE")
    model, params = from_pretrained(source)
    max_pos = args.max_position_embeddings or _source_max_positions(source)
    out = export_hf(model.cfg, params, vocab, args.out, tf=args.tf, max_shard_size=args.max_shard_size,
                    max_position_embeddings=max_pos, overwrite=args.overwrite)
  except (CheckpointError, ConfigError, FileNotFoundError, FileExistsError, ValueError, ImportError) as e:
    print(f"roformer-export: error: {e}", file=sys.stderr)
    return 2  # a bad input, as every CLI here
  print(f"roformer-export: wrote {out}: {', '.join(sorted(os.listdir(out)))}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
