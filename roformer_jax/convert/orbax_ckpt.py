"""Reading our own pretraining checkpoints (orbax) as (model, params).

A pretraining workdir holds `model_config.json` (written by `pretrain.train`) and
`checkpoints/<step>/state`; either the workdir (latest step) or one step folder can be given.
Only the params are read (a partial restore), onto one device or onto a mesh's shardings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from roformer_jax.config import ConfigError, ModelConfig
from roformer_jax.model import RoFormerForMaskedLM

MODEL_CONFIG = "model_config.json"


def locate(folder: Path) -> tuple[Path, int | None] | None:
  """(workdir, step or None for the latest) if `folder` is a pretraining workdir or one of its steps."""
  if (folder / MODEL_CONFIG).exists() and (folder / "checkpoints").is_dir():
    return folder, None
  if (folder / "state").is_dir() and folder.parent.name == "checkpoints" and folder.name.isdigit():
    workdir = folder.parent.parent
    if (workdir / MODEL_CONFIG).exists():
      return workdir, int(folder.name)
  return None


def read_model_config(workdir: Path, **overrides) -> ModelConfig:
  path = workdir / MODEL_CONFIG
  try:
    fields = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ConfigError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
  fields["attention_options"] = tuple(tuple(kv) for kv in fields.get("attention_options", ()))
  fields.update(overrides)
  try:
    return ModelConfig(**fields)
  except (TypeError, ConfigError) as e:
    raise ConfigError(f"{path}: {e}") from None


def write_model_config(cfg: ModelConfig, workdir: Any) -> None:
  """Atomically writes the model config beside the checkpoints (what `from_pretrained` reads back).

  `workdir` is a local path or an `etils.epath.Path` (gs:// on pods)."""
  workdir.mkdir(parents=True, exist_ok=True)
  tmp = workdir / f".{MODEL_CONFIG}.tmp"
  tmp.write_text(json.dumps(cfg.to_dict(), indent=2))
  tmp.replace(workdir / MODEL_CONFIG)


def _flat(tree: Any) -> dict[str, Any]:
  return {"/".join(str(getattr(k, "key", k)) for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _check_tensors(expected: Any, stored: Any, source: str) -> None:
  """Raises CheckpointError naming every tensor the config expects that the checkpoint lacks or holds in
  another shape (a model_config.json that does not describe the checkpoint beside it)."""
  from roformer_jax.convert.load import CheckpointError
  want, have = _flat(expected), _flat(stored)
  errors = [f"missing tensor {k} (shape {tuple(v.shape)})" for k, v in want.items() if k not in have]
  errors += [f"tensor {k} has shape {tuple(have[k].shape)}, the config needs {tuple(v.shape)}"
             for k, v in want.items() if k in have and tuple(have[k].shape) != tuple(v.shape)]
  # Within the model's own modules every stored tensor must be expected; other top-level entries (a
  # fine-tuning head) are simply not read.
  modules = {k.split("/")[0] for k in want}
  errors += [f"unexpected tensor {k} {tuple(have[k].shape)}" for k in have
             if k not in want and k.split("/")[0] in modules]
  if errors:
    raise CheckpointError(f"{source}: {len(errors)} tensor(s) do not match the model:\n  " + "\n  ".join(errors))


def from_orbax(folder: Path, *, step: int | None = None, mesh: Any = None, dtype: str | None = None,
               **overrides) -> tuple[nn.Module, dict]:
  """(RoFormerForMaskedLM, params) from a pretraining workdir or step folder.

  With `mesh`, params are restored straight into the model's shardings on it (nothing is gathered
  on one device); otherwise onto this process's first device.
  """
  import orbax.checkpoint as ocp
  from roformer_jax.train import sharding as sharding_lib

  folder = Path(folder).expanduser().absolute()  # orbax wants absolute paths
  found = locate(folder)
  if found is None:
    raise FileNotFoundError(f"{folder}: not a pretraining workdir or checkpoint step "
                            f"(looked for {MODEL_CONFIG} + checkpoints/<step>/state)")
  workdir, found_step = found
  step = step if step is not None else found_step
  if dtype is not None:
    overrides["dtype"] = dtype
  cfg = read_model_config(workdir, **overrides)
  model = RoFormerForMaskedLM(cfg)
  boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), np.ones((1, 2), np.int32))["params"])
  params = nn.meta.unbox(boxed)
  if mesh is not None:
    shardings = sharding_lib.fit_to_shapes(
        sharding_lib.logical_to_sharding(nn.get_partition_spec(boxed), mesh), params)
  else:
    # This process's own first device: jax.devices()[0] belongs to process 0, and another process cannot
    # restore onto a device it does not address (every process of a multi-host fine-tune reads `init`).
    one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    shardings = jax.tree_util.tree_map(lambda _: one, params)
  target = jax.tree_util.tree_map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), params, shardings)
  from roformer_jax.convert.load import CheckpointError
  manager = ocp.CheckpointManager(workdir / "checkpoints", item_handlers={"state": ocp.PyTreeCheckpointHandler()})
  try:
    step = manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"{workdir / 'checkpoints'}: no complete checkpoint")
    state_dir = workdir / "checkpoints" / str(step) / "state"
    _check_tensors(params, ocp.PyTreeCheckpointHandler().metadata(state_dir).tree.get("params", {}),
                   f"{state_dir} (model config {workdir / MODEL_CONFIG})")
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.PyTreeRestore({"params": target}, partial_restore=True,
                                       restore_args=ocp.checkpoint_utils.construct_restore_args({"params": target}))))
    except Exception as e:  # noqa: BLE001 -- name the checkpoint that failed
      raise CheckpointError(f"{workdir / 'checkpoints' / str(step)}: cannot restore params "
                            f"({type(e).__name__}: {e})") from e
  finally:
    manager.close()
  return model, restored["state"]["params"]
