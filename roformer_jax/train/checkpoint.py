"""Orbax checkpoints of the train state (+ the grain iterator), restored onto abstract targets.

Saves are asynchronous and atomic (orbax writes a temporary directory and renames it when the
save commits), so a crash or SIGKILL mid-save leaves the earlier checkpoints restorable. Restores
always target `jax.ShapeDtypeStruct`s carrying the *current* mesh's shardings, so a checkpoint
moves between device counts, meshes and process counts.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp
from etils import epath

from roformer_jax.config import ConfigError

log = logging.getLogger(__name__)


def _grain_handler():
  import grain.checkpoint  # lazy: only when an iterator is checkpointed
  return grain.checkpoint


class Checkpointer:
  """Keeps the last `keep` checkpoints plus every `keep_every`-th step; saves every `save_every`."""

  def __init__(self, directory: str | Path, *, save_every: int, keep: int = 3, keep_every: int | None = None,
               async_save: bool = True, with_iterator: bool = True):
    # epath: the same code for local folders and gs:// buckets.
    self.directory = epath.Path(directory) if "://" in str(directory) else epath.Path(Path(directory).absolute())
    self.with_iterator = with_iterator
    self.counters: dict[str, int] = {}  # the host-side counts saved with the step `restore` returned
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=save_every, max_to_keep=keep, keep_period=keep_every or None,
        enable_async_checkpointing=async_save, create=True, cleanup_tmp_directories=True)
    handlers = {"state": ocp.StandardCheckpointHandler(), "counters": ocp.JsonCheckpointHandler()}
    if with_iterator:
      handlers["iter"] = _grain_handler().CheckpointHandler()
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state: Any, iterator: Any = None, *, force: bool = False,
           counters: dict[str, int] | None = None) -> bool:
    """Starts a save if the policy (or `force`) says so; returns whether one started. `counters`: host-side
    running counts (skipped steps, ...) that `restore` gives back in `self.counters`."""
    items = {"state": ocp.args.StandardSave(state)}
    if counters is not None:
      items["counters"] = ocp.args.JsonSave({k: int(v) for k, v in counters.items()})
    if self.with_iterator and iterator is not None:
      items["iter"] = _grain_handler().CheckpointSave(iterator)
    return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

  def _iterator_saved_here(self, step: int) -> bool:
    """Whether step's iterator state was written by this same process layout (grain names its
    files process_<i>-of-<n>.json)."""
    name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
    return (self.directory / str(step) / "iter" / name).exists()

  def restore(self, abstract_state: Any, iterator: Any = None, step: int | None = None,
              reposition: Callable[[Any, int], None] | None = None) -> tuple[Any, int] | None:
    """(state, step) from `step`, or from the latest readable checkpoint; None if there is none.

    A latest checkpoint that cannot be read (truncated, corrupt) is reported by name, set aside,
    and the previous one is tried. `iterator` is restored in place when given; if the checkpoint
    was written by a different number of processes, `reposition(iterator, step)` places it instead.
    """
    steps = [step] if step is not None else list(reversed(self.all_steps()))
    for s in steps:
      items = {"state": ocp.args.StandardRestore(abstract_state)}
      if (self.directory / str(s) / "counters").exists():  # absent in checkpoints written before they were kept
        items["counters"] = ocp.args.JsonRestore()
      moved = False
      if self.with_iterator and iterator is not None:
        if self._iterator_saved_here(s) or reposition is None:
          items["iter"] = _grain_handler().CheckpointRestore(iterator)
        else:
          moved = True
      try:
        restored = self.manager.restore(s, args=ocp.args.Composite(**items))
      except Exception as e:  # noqa: BLE001 -- any read failure means "try the previous one"
        mismatch = self._mismatch(s, abstract_state)
        if mismatch:  # a readable checkpoint of another model or optimiser: the workdir is not this run's
          raise ConfigError(f"checkpoint {self.directory}/{s} holds a different model or optimiser state than "
                            f"this config ({mismatch}); use a new --workdir, or the config it was trained "
                            "with") from e
        msg = f"checkpoint {self.directory}/{s} could not be restored ({type(e).__name__}: {e})"
        if step is not None:
          raise RuntimeError(msg) from e
        aside = self._set_aside(s)
        log.warning("%s; moved it to %s and fell back to the previous checkpoint", msg, aside)
        print(f"WARNING: {msg}; moved it to {aside} and fell back to the previous checkpoint", flush=True)
        continue
      if moved:
        reposition(iterator, s)
        print(f"data iterator of {self.path(s)} was saved by another process layout; repositioned it to "
              f"step {s}", flush=True)
      self.counters = dict(restored["counters"]) if "counters" in items else {}
      return restored["state"], s
    return None

  def _mismatch(self, step: int, abstract_state: Any) -> str | None:
    """How `step`'s saved state differs from `abstract_state` in names or shapes (the first three
    differences); None if they agree or the checkpoint's metadata cannot be read (then it is corrupt)."""
    try:
      saved = _shapes(self.manager.item_metadata(step)["state"])
    except Exception:  # noqa: BLE001 -- unreadable metadata: a damaged checkpoint, not another model
      return None
    want = _shapes(abstract_state)
    diffs = []
    for k in sorted(saved.keys() | want.keys(), key=lambda k: (not k.startswith("params/"), k)):  # params first
      if k not in want:
        diffs.append(f"{k}: in the checkpoint only")
      elif k not in saved:
        diffs.append(f"{k}: not in the checkpoint")
      elif saved[k] != want[k]:
        diffs.append(f"{k}: shape {saved[k]} in the checkpoint, {want[k]} here")
    if not diffs:
      return None
    more = f"; {len(diffs) - 3} more" if len(diffs) > 3 else ""
    return "; ".join(diffs[:3]) + more

  def _set_aside(self, step: int) -> str:
    """Renames an unreadable step out of the way (kept for inspection), so training can redo it."""
    src, dst = self.directory / str(step), self.directory / f"{step}.corrupt"
    if jax.process_index() == 0 and src.exists():
      src.rename(dst)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
    self.manager.reload()
    return str(dst)

  def path(self, step: int) -> str:
    return f"{self.directory}/{step}"

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """{'params/roformer/...': shape} of a state, abstract state or orbax metadata tree."""
  def name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        return str(getattr(key, attr))
    return str(key)
  return {"/".join(name(k) for k in path): tuple(getattr(leaf, "shape", None) or ())
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


class BestCheckpoint:
  """The params of the best evaluation so far (`metric`, higher is better), beside the run's checkpoints.

  One orbax checkpoint holding `params` and a `meta` JSON item ({metric, value, step}) written in the same
  atomic save, so the value on record always belongs to the params there; the previous best is deleted
  only after the new one has committed. A resumed run reads the value back and keeps improving on it.
  """

  def __init__(self, directory: str | Path, metric: str, *, async_save: bool = True):
    self.directory = epath.Path(directory) if "://" in str(directory) else epath.Path(Path(directory).absolute())
    self.metric = metric
    options = ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=async_save, create=True,
                                           cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers={
        "params": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()})
    self.step: int | None = None
    self.value = -float("inf")
    latest = self.manager.latest_step()
    if latest is not None:
      meta = self.manager.restore(latest, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
      if meta.get("metric") != metric:
        raise ConfigError(f"{self.directory}/{latest} holds the best {meta.get('metric')!r}, but config.best_metric "
                         f"is {metric!r}; use a new workdir or the same metric")
      self.step, self.value = int(meta["step"]), float(meta["value"])

  def update(self, step: int, params: Any, metrics: dict[str, float]) -> bool:
    """Saves `params` if `metrics[metric]` beats the best so far (strictly); returns whether it did."""
    if self.metric not in metrics:
      raise ConfigError(f"config.best_metric: {self.metric!r} is not an eval metric of this task; "
                       f"it reports {sorted(metrics)}")
    value = float(metrics[self.metric])
    if not value > self.value:  # also false for nan
      return False
    if step in self.manager.all_steps():
      # A resumed run redid this eval (on another layout its value differs in the last bits): the params of this
      # step are already the best on record. Keeping them, rather than deleting and re-saving, leaves no moment
      # without a best on disk.
      return False
    meta = {"metric": self.metric, "value": value, "step": int(step)}
    self.manager.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params),
                                                    meta=ocp.args.JsonSave(meta)), force=True)
    self.step, self.value = int(step), value
    return True

  def restore(self, abstract_params: Any) -> Any:
    """The best params onto `abstract_params`' shardings; None if nothing was saved."""
    self.manager.wait_until_finished()
    if self.step is None:
      return None
    return self.manager.restore(self.step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_params)))["params"]

  def path(self) -> str | None:
    return None if self.step is None else f"{self.directory}/{self.step}"

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
