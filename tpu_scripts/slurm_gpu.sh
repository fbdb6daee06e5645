#!/usr/bin/env bash
# Submits pretraining to a multi-node GPU SLURM cluster: one task per node owning all its GPUs.
#
#   tpu_scripts/slurm_gpu.sh --nodes 4 --gpus-per-node 8 --config roformer_v2_base \
#       --workdir /shared/runs/base --data-dir /shared/tfds [--venv /shared/roformer-venv]
#       [--partition P] [--account A] [--time 24:00:00] [--job-name NAME] [--dry-run]
#       [-- --config.key=value ...]
#
# jax.distributed reads the coordinator, process count and index from SLURM's environment, so
# the same command runs on every node. The job asks for SIGTERM 5 minutes before its time limit
# (pretrain.train then checkpoints and exits) and is requeued after a node failure; resubmitting
# the same command resumes from the latest checkpoint in WORKDIR. --dry-run prints the sbatch
# command with the whole job script.

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { sed -n '2,14s/^# \{0,1\}//p' "$0"; }

NODES="" GPUS="" CONFIG="" WORKDIR="" DATA_DIR="" VENV="" PARTITION="" ACCOUNT="" TIME=24:00:00
JOB_NAME=roformer-pretrain OVERRIDES=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --nodes) need_value "$@"; NODES=$2; shift 2 ;;
    --gpus-per-node) need_value "$@"; GPUS=$2; shift 2 ;;
    --config) need_value "$@"; CONFIG=$2; shift 2 ;;
    --workdir) need_value "$@"; WORKDIR=$2; shift 2 ;;
    --data-dir) need_value "$@"; DATA_DIR=$2; shift 2 ;;
    --venv) need_value "$@"; VENV=$2; shift 2 ;;
    --partition) need_value "$@"; PARTITION=$2; shift 2 ;;
    --account) need_value "$@"; ACCOUNT=$2; shift 2 ;;
    --time) need_value "$@"; TIME=$2; shift 2 ;;
    --job-name) need_value "$@"; JOB_NAME=$2; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; OVERRIDES=("$@"); break ;;
    *) die "unknown option $(quote "$1") (see --help; config overrides go after --)" ;;
  esac
done
require --nodes "$NODES"
require --gpus-per-node "$GPUS"
require --config "$CONFIG"
require --workdir "$WORKDIR"
require --data-dir "$DATA_DIR"
[[ "$NODES" =~ ^[1-9][0-9]*$ ]] || die "--nodes $(quote "$NODES"): a positive integer"
[[ "$GPUS" =~ ^[1-9][0-9]*$ ]] || die "--gpus-per-node $(quote "$GPUS"): a positive integer"
[[ "$TIME" =~ ^([0-9]+-)?[0-9]+(:[0-9]{2}){0,2}$ ]] || die "--time $(quote "$TIME"): SLURM time, e.g. 24:00:00 or 2-00:00:00"
[[ "$JOB_NAME" =~ ^[A-Za-z0-9_.-]+$ ]] || die "--job-name $(quote "$JOB_NAME"): letters, digits, _ . -"
check_config "$CONFIG"
check_overrides "${OVERRIDES[@]}"
# Every node must see the same directories: a shared filesystem (absolute path) or GCS.
for pair in "--workdir=$WORKDIR" "--data-dir=$DATA_DIR"; do
  option=${pair%%=*} value=${pair#*=}
  [[ "$value" == /* || "$value" == gs://* ]] ||
    die "$option $(quote "$value"): use an absolute path on a filesystem all nodes share, or gs://..."
done
python=python3
if [[ -n "$VENV" ]]; then
  [[ "$VENV" == /* ]] || die "--venv $(quote "$VENV"): an absolute path on the shared filesystem"
  python="$VENV/bin/python"
fi

directives=("--job-name=$JOB_NAME" "--nodes=$NODES" --ntasks-per-node=1 "--gpus-per-node=$GPUS"
  "--time=$TIME" --signal=TERM@300 --requeue "--output=$JOB_NAME-%j.out")
if [[ -n "$PARTITION" ]]; then directives+=("--partition=$PARTITION"); fi
if [[ -n "$ACCOUNT" ]]; then directives+=("--account=$ACCOUNT"); fi

job="#!/bin/bash"
for d in "${directives[@]}"; do job+=$'\n'"#SBATCH $d"; done
job+="
set -euo pipefail
export TFDS_DATA_DIR=$(quote "$DATA_DIR")
# The configs ship inside the installed pretrain package; run from its parent directory.
cd \"\$($(quote "$python") -c 'import os, pretrain; print(os.path.dirname(os.path.dirname(pretrain.__file__)))')\"
srun --kill-on-bad-exit=1 $(quote_all "$python" -m pretrain.train --config "pretrain/configs/$CONFIG.py" \
  --workdir "$WORKDIR" "--config.data.data_dir=$DATA_DIR" "${OVERRIDES[@]}")"

if [[ "$DRY_RUN" == 1 ]]; then
  printf "sbatch --parsable <<'EOF'\n%s\nEOF\n" "$job"
  exit 0
fi
command -v sbatch > /dev/null || die "sbatch not found: run this on a SLURM login node"
printf '+ sbatch --parsable <<EOF ... (job script: rerun with --dry-run to see it)\n' >&2
sbatch --parsable <<< "$job"
