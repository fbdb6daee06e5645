#!/usr/bin/env bash
# Deletes a TPU slice (or its queued resource, which deletes the node with it).
#
#   tpu_scripts/teardown.sh --name NAME --zone ZONE [--queued] [--project P] [--dry-run]
#
# The workdir on GCS is kept: a later create + setup + launch resumes from it.

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { sed -n '2,6s/^# \{0,1\}//p' "$0"; }

NAME="" ZONE="" QUEUED=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) need_value "$@"; NAME=$2; shift 2 ;;
    --zone) need_value "$@"; ZONE=$2; shift 2 ;;
    --project) need_value "$@"; PROJECT=$2; shift 2 ;;
    --queued) QUEUED=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option $(quote "$1") (see --help)" ;;
  esac
done
require --name "$NAME"
require --zone "$ZONE"
check_name --name "$NAME"
location_flags

if [[ "$QUEUED" == 1 ]]; then
  run gcloud compute tpus queued-resources delete "$NAME" "${LOCATION[@]}" --force --quiet
else
  run gcloud compute tpus tpu-vm delete "$NAME" "${LOCATION[@]}" --quiet
fi
