#!/usr/bin/env bash
# Launches pretraining on all workers of a TPU slice at once (gcloud ... ssh --worker=all).
#
#   tpu_scripts/launch.sh --name NAME --zone ZONE --config roformer_v2_base \
#       --workdir gs://BUCKET/runs/base --data-dir gs://BUCKET/tfds [--project P] [--foreground]
#       [--dry-run] [-- --config.key=value ...]
#
# Each worker runs `python -m pretrain.train --config pretrain/configs/NAME.py --workdir WORKDIR`
# with the tfds data dir on GCS (jax.distributed finds the pod by itself). The run is detached
# (setsid) and logs to ~/roformer-logs/train.log; --foreground streams every worker's output here
# instead. A run already going on the slice is stopped first, so re-launching resumes cleanly
# from the latest checkpoint in WORKDIR.

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { sed -n '2,13s/^# \{0,1\}//p' "$0"; }

NAME="" ZONE="" CONFIG="" WORKDIR="" DATA_DIR="" FOREGROUND=0 OVERRIDES=()
while [[ $# -gt 0 ]]; do
  common_option "$@"; if ((SHIFT)); then shift "$SHIFT"; continue; fi
  case "$1" in
    --config) need_value "$@"; CONFIG=$2; shift 2 ;;
    --workdir) need_value "$@"; WORKDIR=$2; shift 2 ;;
    --data-dir) need_value "$@"; DATA_DIR=$2; shift 2 ;;
    --foreground) FOREGROUND=1; shift ;;
    --) shift; OVERRIDES=("$@"); break ;;
    *) die "unknown option $(quote "$1") (see --help; config overrides go after --)" ;;
  esac
done
require_slice
require --config "$CONFIG"
require --workdir "$WORKDIR"
require --data-dir "$DATA_DIR"
check_config "$CONFIG"
check_gcs --workdir "$WORKDIR"
check_gcs --data-dir "$DATA_DIR"
check_overrides "${OVERRIDES[@]}"
location_flags

train="$REMOTE_VENV/bin/python -m pretrain.train $(quote_all --config "pretrain/configs/$CONFIG.py" \
  --workdir "$WORKDIR" "--config.data.data_dir=$DATA_DIR" "${OVERRIDES[@]}")"
# The configs ship inside the installed `pretrain` package: run from its parent directory so
# pretrain/configs/NAME.py resolves the same way as in a checkout.
site="\"\$($REMOTE_VENV/bin/python -c 'import os, pretrain; print(os.path.dirname(os.path.dirname(pretrain.__file__)))')\""
# SIGTERM makes pretrain.train save a checkpoint and exit; wait up to 10 minutes for that.
stop="if [ -f $REMOTE_LOGS/train.pid ]; then pg=\$(cat $REMOTE_LOGS/train.pid); \
kill -TERM -- -\$pg 2>/dev/null || true; \
for _ in \$(seq 120); do kill -0 -- -\$pg 2>/dev/null || break; sleep 5; done; \
kill -KILL -- -\$pg 2>/dev/null || true; rm -f $REMOTE_LOGS/train.pid; fi"
env="export TFDS_DATA_DIR=$(quote "$DATA_DIR")"

if [[ "$FOREGROUND" == 1 ]]; then
  remote="set -o pipefail; $stop; mkdir -p $REMOTE_LOGS && cd $site && $env && $train 2>&1 | tee $REMOTE_LOGS/train.log"
else
  # setsid: the run outlives this ssh session; the process group id in train.pid stops it later.
  detached="$env; $train > $REMOTE_LOGS/train.log 2>&1; echo \$? > $REMOTE_LOGS/exit_code"
  remote="$stop; mkdir -p $REMOTE_LOGS && rm -f $REMOTE_LOGS/exit_code && cd $site && \
{ setsid bash -c $(quote "$detached") < /dev/null > /dev/null 2>&1 & echo \$! > $REMOTE_LOGS/train.pid; }"
fi
tpu_ssh all "$remote"
