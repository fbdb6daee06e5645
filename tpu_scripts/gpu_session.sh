#!/usr/bin/env bash
# One device session on a lent NVIDIA GPU (see README "GPU"): exactness of the exact attention variants on
# the GPU, the train step side by side with the PyTorch port (eager and torch.compile), a profile of ours,
# and the longest sequence. Each part prints its JSON rows as they come, under its own time limit.
#   bash tpu_scripts/gpu_session.sh [PARTS]   PARTS: comma list of exact,train,long (default all)
# Wheels for the port (roformer, transformers 4.46, tokenizers, huggingface_hub) are taken from .whl/ if there.
set -uo pipefail
if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  echo "Launches one measurement session on a lent NVIDIA GPU: exactness, the train step beside the PyTorch port,"
  echo "the longest sequence. Usage: bash tpu_scripts/gpu_session.sh [exact,train,long]; env GPU_* overrides."
  exit 0
fi
parts=",${1:-exact,train,long},"
out=${OUT:-/tmp/gpu_out}; mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD || exit 1
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader
python3 -c "import jax, flax, torch; print('jax', jax.__version__, 'flax', flax.__version__, 'torch', torch.__version__, jax.devices())"
# Each part's python runs directly under `timeout` (a process left running past its limit would hold the GPU
# through the next part); its output is filtered line by line, so a part cut short keeps what it printed.
quiet() { grep --line-buffered -v -E "^\s*$|GenerationMixin|trust_remote_code|owner of the model|^  - "; }
bench() { local limit=$1; shift; timeout -k 5 "$limit" python3 -m roformer_jax.bench --malloc=default "$@" 2>&1 | quiet; }
if [[ $parts == *,exact,* ]]; then
  echo "== exactness"
  bench "${GPU_EXACT_S:-150}" exactness --cases "${GPU_CASES:-packed:2x512x12x64,subset:2x512x12x64,packed:1x4096x12x64}" \
    --variants "${GPU_VARIANTS:-softmax,softmax:xla,dot_product:cudnn,pallas}" | tee "$out/exactness.jsonl"
fi
if [[ $parts == *,train,* ]]; then
  echo "== train step, RoFormerV2-base, seq 512, batch 32, bf16"
  bench "${GPU_TRAIN_S:-300}" train --preset "${GPU_PRESET:-roformer_v2_base}" --seq "${GPU_SEQ:-512}" --batch "${GPU_BATCH:-32}" --dtype bfloat16 \
    --rounds "${GPU_ROUNDS:-3}" --repeats 10 --ours "${GPU_OURS:-softmax,softmax/scan,softmax:xla}" --peers "${GPU_PEERS:-roformer,roformer-compile}" \
    --profile "$out/profile" | tee "$out/train.jsonl"
  find "$out/profile" -name "*.xplane.pb" -exec cp {} "$out/train.xplane.pb" \; ; rm -rf "$out/profile"
fi
if [[ $parts == *,long,* ]]; then
  echo "== longest sequence, batch 1, remat=full, scan"
  # shellcheck disable=SC2086  # a space-separated list of lengths
  for n in ${GPU_LONG:-65536}; do
    bench 150 train --preset "${GPU_PRESET:-roformer_v2_base}" --seq "$n" --batch 1 --dtype bfloat16 \
      --rounds 1 --repeats 2 --ours softmax/scan/remat=full | tee -a "$out/long.jsonl"
  done
fi
