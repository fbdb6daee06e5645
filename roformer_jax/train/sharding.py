"""One device mesh (`data`, `fsdp`, `tensor`) and one rules table from logical axis names to it.

Model code only names axes (`embed`, `mlp`, `heads`, ...); this table decides where they live,
so data parallel, FSDP and tensor parallel are config changes, not code changes (MaxText, lm1b).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# Logical axis -> mesh axes, in priority order. A mesh axis already used by an earlier dim of the
# same array is skipped (flax resolves this), so activations [batch, length, embed] put batch on
# (data, fsdp) while parameters [vocab, embed] put embed on fsdp.
LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", BATCH_AXES),
    ("length", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("kv", None),
    ("layers", None),
)


def mesh_shape(data: int, fsdp: int, tensor: int, num_devices: int) -> tuple[int, int, int]:
  """Resolves one -1 entry to fill the devices; checks that the product matches."""
  from roformer_jax.config import ConfigError  # lazy: attention imports this module while config builds presets
  sizes = [data, fsdp, tensor]
  if sizes.count(-1) > 1:
    raise ConfigError(f"config.mesh: at most one of mesh.data/mesh.fsdp/mesh.tensor may be -1, got {sizes}")
  for name, s in zip(MESH_AXES, sizes):
    if s == 0 or s < -1:
      raise ConfigError(f"config.mesh.{name} must be a positive size or -1, got {s}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ConfigError(f"config.mesh: {num_devices} devices are not divisible by the fixed axes {sizes}")
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ConfigError(f"config.mesh: data*fsdp*tensor = {'*'.join(map(str, sizes))} = {math.prod(sizes)} "
                     f"but there are {num_devices} devices")
  return tuple(sizes)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices: Sequence[Any] | None = None) -> Mesh:
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(data, fsdp, tensor, len(devices))
  try:
    grid = mesh_utils.create_device_mesh(shape, devices=devices)
  except (ValueError, NotImplementedError, AssertionError):
    grid = np.asarray(devices).reshape(shape)  # CPU or unusual topologies
  return Mesh(grid, MESH_AXES)


def logical_to_sharding(specs: Any, mesh: Mesh, rules=LOGICAL_RULES) -> Any:
  """A tree of logical PartitionSpecs -> a tree of NamedShardings on `mesh`."""
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def fit_spec(spec: P, shape: Sequence[int], mesh_shape: Any) -> P:
  """`spec` for an array of `shape`, with a dim's mesh axes dropped where their size does not divide it
  (that dim is then whole). `mesh_shape`: mesh axis name -> size (a mesh's `.shape`)."""
  spec = list(spec) + [None] * (len(shape) - len(spec))
  for i, axes in enumerate(spec):
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    size = math.prod(mesh_shape[n] for n in names)
    if size > 1 and shape[i] % size:
      spec[i] = None
  return P(*spec)


def fit_to_shapes(shardings: Any, shapes: Any) -> Any:
  """Drops mesh axes from dims they do not divide (e.g. a 1895-row vocab over tensor=4): that dim
  is then replicated instead of failing. Trees of NamedShardings and of arrays/ShapeDtypeStructs."""

  def fit(sharding: NamedSharding, x) -> NamedSharding:
    return NamedSharding(sharding.mesh, fit_spec(sharding.spec, x.shape, sharding.mesh.shape))

  return jax.tree_util.tree_map(fit, shardings, shapes, is_leaf=lambda x: isinstance(x, NamedSharding))


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """Batch-major arrays: the leading dim over (data, fsdp), the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Per-process numpy batch -> global jax arrays sharded over the batch axes.

  Each process passes only its own rows (its data shard); the global batch is their concatenation
  in process order.
  """
  return {k: jax.make_array_from_process_local_data(batch_sharding(mesh, v.ndim), v) for k, v in local.items()}


def process_blocks(mesh: Mesh, rows: int) -> dict[int, list[tuple[int, int]]]:
  """{process index: the [start, stop) blocks of a `rows`-row global batch its devices hold, in order}."""
  blocks: dict[int, set[tuple[int, int]]] = {}
  for device, (index,) in batch_sharding(mesh, 1).devices_indices_map((rows,)).items():
    blocks.setdefault(device.process_index, set()).add((index.start or 0, rows if index.stop is None else index.stop))
  return {p: sorted(b) for p, b in sorted(blocks.items())}


def process_order(mesh: Mesh, rows: int) -> np.ndarray:
  """[rows]: the global batch row that row i of the processes' data (process 0's rows, then process 1's, ...)
  lands in under `global_batch`. A process's rows fill the batch blocks its devices hold, in order, and those need
  not be one block in process order (a TPU pod host's chips are not consecutive along the batch axes)."""
  return np.concatenate([np.arange(a, b) for blocks in process_blocks(mesh, rows).values() for a, b in blocks])


def bytes_per_device(tree: Any) -> dict[Any, int]:
  """Bytes each device holds of a tree of jax.Arrays (for checking that a layout really shards)."""
  out: dict[Any, int] = {}
  for x in jax.tree_util.tree_leaves(tree):
    for shard in x.addressable_shards:
      out[shard.device] = out.get(shard.device, 0) + shard.data.nbytes
  return out
