"""CLI start-up: keep libtpu from probing for a TPU on a machine that has none.

With libtpu installed (the test extras put it in the same venv) and JAX_PLATFORMS unset, JAX tries every
backend at start-up, TPU included. libtpu then queries the (absent) TPU metadata server and prints "could not
determine TPU accelerator type" and an `E0000 ... INVALID_ARGUMENT` line to stderr before JAX falls back to
the CPU. JAX's own TPU_SKIP_MDS_QUERY does not silence it; leaving `tpu` out of JAX_PLATFORMS does.
Compiling for a described TPU topology (`roformer-bench aot`) loads libtpu whatever JAX_PLATFORMS says:
`quiet_libtpu_init` gives it the one-host values it would otherwise look up.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Iterator


def tpu_present() -> bool:
  """Whether this machine may have a TPU: an accel device (v2-v5p VMs), a VFIO group (v5e, v6e), or a
  Google PCI device. Errs towards True: a false positive only leaves JAX's default alone."""
  if glob.glob("/dev/accel*") or [p for p in glob.glob("/dev/vfio/*") if os.path.basename(p) != "vfio"]:
    return True
  for vendor in glob.glob("/sys/bus/pci/devices/*/vendor"):
    try:
      with open(vendor) as f:
        if f.read().strip() == "0x1ae0":  # Google
          return True
    except OSError:
      continue
  return False


def _gpu_platforms() -> list[str]:
  """The GPU platforms whose JAX plugins are installed (their backends then still start as usual)."""
  names = {ep.name for ep in importlib.metadata.entry_points(group="jax_plugins")}
  names |= {d.metadata["Name"] or "" for d in importlib.metadata.distributions()
            if (d.metadata["Name"] or "").startswith(("jax-cuda", "jax_cuda", "jax-rocm", "jax_rocm"))}
  found = []
  for platform in ("cuda", "rocm"):
    if any(platform in n for n in names):
      found.append(platform)
  return found


def quiet_tpu_probe(environ=os.environ) -> str | None:
  """Leaves `tpu` out of JAX's platforms when libtpu is installed but no TPU is attached.

  Only when JAX_PLATFORMS is unset: an explicit choice is never changed, and a TPU VM keeps JAX's
  default. Installed GPU plugins stay in the list (JAX skips CUDA itself when no GPU is visible).
  Returns the value set, or None. Call it before the first JAX device query; if JAX is already
  imported its config is updated too.
  """
  if "JAX_PLATFORMS" in environ or importlib.util.find_spec("libtpu") is None or tpu_present():
    return None
  platforms = ",".join(_gpu_platforms() + ["cpu"])
  environ["JAX_PLATFORMS"] = platforms
  if "jax" in sys.modules and environ is os.environ:  # JAX read JAX_PLATFORMS when it was imported
    sys.modules["jax"].config.update("jax_platforms", platforms)
  return platforms


# The TPU VM's slice, which libtpu otherwise reads from the metadata server; any one set means the user set them.
_LIBTPU_SLICE = {"TPU_WORKER_HOSTNAMES": "localhost", "TPU_HOST_BOUNDS": "1,1,1"}


@contextlib.contextmanager
def quiet_libtpu_init(environ=os.environ) -> Iterator[bool]:
  """While libtpu initialises only to compile for a described topology, on a machine with no TPU: a one-host
  slice in the environment, so it prints no "could not determine TPU accelerator type" / `E0000` lines.

  Changes nothing on a TPU VM or when the user set any of these or TPU_ACCELERATOR_TYPE; restores the
  environment on exit (TPU_WORKER_HOSTNAMES also means "TPU pod" to `jax.distributed`). Yields whether it set them.
  """
  if tpu_present() or any(k in environ for k in (*_LIBTPU_SLICE, "TPU_ACCELERATOR_TYPE")):
    yield False
    return
  environ.update(_LIBTPU_SLICE)
  try:
    yield True
  finally:
    for k in _LIBTPU_SLICE:
      environ.pop(k, None)
