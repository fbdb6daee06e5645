"""Starting a fine-tuning run from a checkpoint: its config, tokenizer and tensors, under the config key `init`.

`init` is any path `roformer_jax.from_pretrained` reads (a ports' folder, a bert4keras TF release, a
pretraining workdir or one of its steps), relative or absolute. Every tensor of the checkpoint's modules
(the encoder, and the MLM head when asked for) must come from it; the task's other params (new heads)
keep their fresh initialisation and are listed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np

from roformer_jax.config import ConfigError, ModelConfig
from roformer_jax.convert.load import CheckpointError


class Pretrained:
  """A checkpoint's model config and host (numpy) tensors, read once; `key` names it in every error."""

  def __init__(self, path: str, *, with_mlm: bool = False, key: str = "config.init", **overrides):
    """`overrides`: ModelConfig fields the run changes (dropout, attention, dtype, scan_layers, remat)."""
    from roformer_jax import from_pretrained
    if not path:
      raise ConfigError(f"{key} is empty: give the checkpoint to start from (a ports' folder, a bert4keras "
                        "release or a pretraining workdir), e.g. --config.init=workdir/tiny_cpu")
    self.key, self.path = key, path
    self.folder = Path(path).expanduser().absolute()
    try:
      model, params = from_pretrained(self.folder, with_mlm=with_mlm, **overrides)
    except (FileNotFoundError, NotADirectoryError) as e:
      raise ConfigError(f"{key}={path} is not a checkpoint: {e}") from None
    except CheckpointError as e:
      raise CheckpointError(f"{key}={path}: {e}") from None
    except ConfigError as e:
      raise ConfigError(f"{key}={path}: {e}") from None
    self.model_config: ModelConfig = model.cfg
    # The MLM model's tree is {"roformer", "mlm"}; the bare encoder's is the "roformer" part itself.
    params = jax.device_get(params)
    self.params = params if with_mlm else {"roformer": params}

  def vocab_file(self, vocab: str = "", vocab_key: str = "config.vocab") -> Path:
    """`vocab` if given, else the vocab.txt beside the checkpoint (or its pretraining workdir)."""
    from roformer_jax.export import find_vocab
    if vocab:
      if not Path(vocab).expanduser().is_file():
        raise ConfigError(f"{vocab_key}={vocab}: no such vocab file")
      return Path(vocab).expanduser().absolute()
    found = find_vocab(self.folder)
    if found is None:
      raise ConfigError(f"{self.key}={self.path}: no vocab.txt beside the checkpoint; pass {vocab_key}=FILE")
    return found

  def load_into(self, params: Any) -> tuple[Any, list[str]]:
    """`params` (fresh, placed on the mesh) with the checkpoint's tensors in their place and shardings.

    Returns (params, the names and shapes of the params left freshly initialised). Raises CheckpointError
    naming every tensor of the checkpoint's modules that `params` expects but the checkpoint lacks (or
    holds in another shape), and every checkpoint tensor `params` has no place for.
    """
    fresh, loaded = _flat(params), _flat(self.params)
    modules = {k.split("/")[0] for k in loaded}
    errors = [f"missing tensor {k} {tuple(v.shape)}" for k, v in fresh.items()
              if k.split("/")[0] in modules and k not in loaded]
    errors += [f"tensor {k} has shape {tuple(loaded[k].shape)}, the model needs {tuple(v.shape)}"
               for k, v in fresh.items() if k in loaded and tuple(loaded[k].shape) != tuple(v.shape)]
    errors += [f"unexpected tensor {k} {tuple(v.shape)}" for k, v in loaded.items() if k not in fresh]
    if errors:
      raise CheckpointError(f"{self.key}={self.path}: {len(errors)} tensor(s) do not match the model:\n  "
                            + "\n  ".join(errors))

    def place(path, leaf):
      name = _name(path)
      if name not in loaded:
        return leaf
      value = np.asarray(loaded[name], leaf.dtype)
      # Every process holds the whole tensor; each device takes its shard of it.
      return jax.make_array_from_callback(leaf.shape, leaf.sharding, lambda index: value[index])

    new = [f"{k} {tuple(v.shape)}" for k, v in fresh.items() if k not in loaded]
    return jax.tree_util.tree_map_with_path(place, params), new


def _name(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def _flat(tree: Any) -> dict[str, Any]:
  return {_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}
