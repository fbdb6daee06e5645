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
  common_option "$@"; if ((SHIFT)); then shift "$SHIFT"; continue; fi
  case "$1" in
    --queued) QUEUED=1; shift ;;
    *) die "unknown option $(quote "$1") (see --help)" ;;
  esac
done
require_slice
location_flags

if [[ "$QUEUED" == 1 ]]; then
  run gcloud compute tpus queued-resources delete "$NAME" "${LOCATION[@]}" --force --quiet
else
  run gcloud compute tpus tpu-vm delete "$NAME" "${LOCATION[@]}" --quiet
fi
