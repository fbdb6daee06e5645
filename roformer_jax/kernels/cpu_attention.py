"""Fused float32 softmax attention for AVX-512 CPUs, as XLA FFI custom calls (cpu_attention.cc).

`available()` builds the kernel on first use (g++, a few seconds) into a cache directory keyed by the
source, the compiler flags and jaxlib's version, and registers it with XLA; it says False (and the callers
keep XLA's own attention) where the CPU lacks AVX-512, g++ is missing, the build fails, or
ROFORMER_JAX_CPU_KERNELS=0. Nothing happens at import. `python -m roformer_jax.kernels.cpu_attention`
builds it ahead of time (`make kernels`, which the Makefile's run targets do first), so parallel test workers
find it ready.

`forward(q, k, v, key_mask, key_seg, query_seg)` -> (o, p) and `backward(...)` -> (dq, dk, dv) work on the
model's [B, L, H, D] layout; q arrives rotated and scaled. `roformer_jax.attention.softmax` owns the VJP.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

_SOURCE = pathlib.Path(__file__).with_name("cpu_attention.cc")
_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq",
          "-mfma", "-w")
_CPU_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512dq")
_FWD, _BWD = "roformer_jax_cpu_attention_fwd", "roformer_jax_cpu_attention_bwd"


def _cpu_has_avx512() -> bool:
  try:
    text = pathlib.Path("/proc/cpuinfo").read_text()
  except OSError:
    return False
  flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
  return all(f in flags for f in _CPU_FLAGS)


def _cache_dir() -> pathlib.Path:
  """$XDG_CACHE_HOME (or ~/.cache)/roformer_jax/kernels; the temp directory where that cannot be written."""
  root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  path = pathlib.Path(root) / "roformer_jax" / "kernels"
  try:
    path.mkdir(parents=True, exist_ok=True)
    if os.access(path, os.W_OK):
      return path
  except OSError:
    pass
  return pathlib.Path(tempfile.gettempdir()) / f"roformer_jax-kernels-{os.getuid()}"


def build() -> pathlib.Path:
  """Compiles cpu_attention.cc (once per source/flags/jaxlib) and returns the shared library's path.

  The library is written to a temporary name and renamed into place, so concurrent builders and an
  interrupted build never leave a half-written file under the final name."""
  import jaxlib
  key = hashlib.sha256(_SOURCE.read_bytes() + " ".join(_FLAGS).encode() + jaxlib.__version__.encode())
  out = _cache_dir() / f"cpu_attention-{key.hexdigest()[:16]}.so"
  if out.exists():
    return out
  cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
  if cxx is None:
    raise RuntimeError("roformer_jax.kernels.cpu_attention: no C++ compiler (g++) found")
  out.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
  os.close(fd)
  try:
    cmd = [cxx, *_FLAGS, f"-I{jax.ffi.include_dir()}", str(_SOURCE), "-o", tmp]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
      raise RuntimeError(f"roformer_jax.kernels.cpu_attention: building {_SOURCE} failed:\n{result.stderr[-4000:]}")
    os.replace(tmp, out)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)
  return out


@functools.cache
def available() -> bool:
  """True once the kernel is built and registered for the CPU platform (see the module docstring)."""
  if os.environ.get("ROFORMER_JAX_CPU_KERNELS", "1") == "0" or not _cpu_has_avx512():
    return False
  try:
    lib = ctypes.cdll.LoadLibrary(str(build()))
  except (RuntimeError, OSError) as e:
    print(f"roformer_jax: CPU attention kernel unavailable, using XLA's attention ({e})", file=sys.stderr)
    return False
  jax.ffi.register_ffi_target(_FWD, jax.ffi.pycapsule(lib.RjCpuAttentionFwd), platform="cpu")
  jax.ffi.register_ffi_target(_BWD, jax.ffi.pycapsule(lib.RjCpuAttentionBwd), platform="cpu")
  return True


def forward(q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array, key_seg: jax.Array,
            query_seg: jax.Array, causal: bool = False) -> tuple[jax.Array, jax.Array]:
  """q [B, Lq, H, D] (rotated, scaled), k, v [B, Lk, H, D], key_mask [B, Lk] bool, key_seg [B, Lk] and
  query_seg [B, Lq] int32 -> (o [B, Lq, H, D], p [B, H, Lq, Lk]), all float32. The ids are segment ids
  (a key is visible where they are equal) or, with `causal`, causal ids (where the key's is <= the query's)."""
  b, lq, h, _ = q.shape
  out = (jax.ShapeDtypeStruct(q.shape, jnp.float32), jax.ShapeDtypeStruct((b, h, lq, k.shape[1]), jnp.float32))
  return jax.ffi.ffi_call(_FWD, out, vmap_method="sequential")(q, k, v, key_mask, key_seg, query_seg,
                                                               causal=np.int32(causal))


def backward(q, k, v, o, dout, p, key_mask, key_seg, query_seg,
             causal: bool = False) -> tuple[jax.Array, jax.Array, jax.Array]:
  """-> (dS K, dS^T q, P^T dO): the gradients with respect to the rotated, scaled q (before the 1/sqrt(d)
  of the chain rule is applied: the caller does), k and v."""
  out = (jax.ShapeDtypeStruct(q.shape, jnp.float32), jax.ShapeDtypeStruct(k.shape, jnp.float32),
         jax.ShapeDtypeStruct(v.shape, jnp.float32))
  return jax.ffi.ffi_call(_BWD, out, vmap_method="sequential")(q, k, v, o, dout, p, key_mask, key_seg, query_seg,
                                                               causal=np.int32(causal))


if __name__ == "__main__":
  print(build() if _cpu_has_avx512() else "no AVX-512 on this CPU: nothing to build")
