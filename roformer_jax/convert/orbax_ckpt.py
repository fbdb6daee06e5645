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


def from_orbax(folder: Path, *, step: int | None = None, mesh: Any = None, dtype: str | None = None,
               **overrides) -> tuple[nn.Module, dict]:
  """(RoFormerForMaskedLM, params) from a pretraining workdir or step folder.

  With `mesh`, params are restored straight into the model's shardings on it (nothing is gathered
  on one device); otherwise onto the default device.
  """
  import orbax.checkpoint as ocp
  from roformer_jax.train import sharding as sharding_lib

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
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shardings = jax.tree_util.tree_map(lambda _: one, params)
  target = jax.tree_util.tree_map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), params, shardings)
  manager = ocp.CheckpointManager(workdir / "checkpoints", item_handlers={"state": ocp.PyTreeCheckpointHandler()})
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"{workdir / 'checkpoints'}: no complete checkpoint")
  try:
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore({"params": target}, partial_restore=True,
                                     restore_args=ocp.checkpoint_utils.construct_restore_args({"params": target}))))
  except Exception as e:  # noqa: BLE001 -- name the checkpoint that failed
    raise ValueError(f"{workdir / 'checkpoints' / str(step)}: cannot restore params "
                     f"({type(e).__name__}: {e})") from e
  finally:
    manager.close()
  return model, restored["state"]["params"]
