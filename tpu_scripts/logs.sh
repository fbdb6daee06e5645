#!/usr/bin/env bash
# Streams or collects the pretraining logs of a TPU slice.
#
#   tpu_scripts/logs.sh --name NAME --zone ZONE [--project P] [--worker N|all]   # follow (tail -F)
#   tpu_scripts/logs.sh --name NAME --zone ZONE --collect DIR --workdir gs://... [--dry-run]
#
# Following shows worker 0 by default (it prints the metrics); --worker=all interleaves every
# worker. --collect has each worker upload its log to WORKDIR/logs/<hostname>.log, then copies
# that folder to DIR here.

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { sed -n '2,9s/^# \{0,1\}//p' "$0"; }

NAME="" ZONE="" WORKER=0 COLLECT="" WORKDIR="" LINES=100
while [[ $# -gt 0 ]]; do
  common_option "$@"; if ((SHIFT)); then shift "$SHIFT"; continue; fi
  case "$1" in
    --worker) need_value "$@"; WORKER=$2; shift 2 ;;
    --lines) need_value "$@"; LINES=$2; shift 2 ;;
    --collect) need_value "$@"; COLLECT=$2; shift 2 ;;
    --workdir) need_value "$@"; WORKDIR=$2; shift 2 ;;
    *) die "unknown option $(quote "$1") (see --help)" ;;
  esac
done
require_slice
[[ "$WORKER" =~ ^([0-9]+|all)$ ]] || die "--worker $(quote "$WORKER"): a worker index (0, 1, ...) or all"
[[ "$LINES" =~ ^[0-9]+$ ]] || die "--lines $(quote "$LINES"): a number"
location_flags

if [[ -z "$COLLECT" ]]; then
  tpu_ssh "$WORKER" "tail -n $LINES -F $REMOTE_LOGS/train.log"
  exit 0
fi
require --workdir "$WORKDIR"
check_gcs --workdir "$WORKDIR"
logs="${WORKDIR%/}/logs"
tpu_ssh all "gcloud storage cp $REMOTE_LOGS/train.log $(quote "$logs")/\$(hostname).log"
run mkdir -p "$COLLECT"
run gcloud storage cp --recursive "$logs" "$COLLECT"
