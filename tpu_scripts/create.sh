#!/usr/bin/env bash
# Creates a TPU VM slice (v4, v5e, v5p, v6e), directly or as a queued resource, on-demand or spot.
#
#   tpu_scripts/create.sh --name NAME --zone ZONE --accelerator v5e-16 [--spot] [--queued]
#                         [--project P] [--runtime-version V] [--dry-run]
#
# With --queued the request waits in Cloud TPU's queue (the recommended way to get spot capacity)
# and this script polls until it is ACTIVE. The queued resource takes the node's name.

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { sed -n '2,9s/^# \{0,1\}//p' "$0"; }

NAME="" ZONE="" ACCELERATOR="" RUNTIME="" SPOT=0 QUEUED=0 POLL_SECONDS=60
while [[ $# -gt 0 ]]; do
  common_option "$@"; if ((SHIFT)); then shift "$SHIFT"; continue; fi
  case "$1" in
    --accelerator) need_value "$@"; ACCELERATOR=$2; shift 2 ;;
    --runtime-version) need_value "$@"; RUNTIME=$2; shift 2 ;;
    --spot) SPOT=1; shift ;;
    --queued) QUEUED=1; shift ;;
    *) die "unknown option $(quote "$1") (see --help)" ;;
  esac
done
require_slice
require --accelerator "$ACCELERATOR"
parse_accelerator "$ACCELERATOR"
RUNTIME=${RUNTIME:-$ACCEL_RUNTIME}
location_flags

SPOT_FLAG=()
if [[ "$SPOT" == 1 ]]; then SPOT_FLAG=(--spot); fi
if [[ "$DRY_RUN" == 1 ]]; then
  printf '# %s: %s chips on %s host(s)\n' "$ACCEL_TYPE" "$ACCEL_CHIPS" "$ACCEL_HOSTS"
fi

if [[ "$QUEUED" == 0 ]]; then
  run gcloud compute tpus tpu-vm create "$NAME" "${LOCATION[@]}" "--accelerator-type=$ACCEL_TYPE" \
    "--version=$RUNTIME" "${SPOT_FLAG[@]}"
  exit 0
fi

run gcloud compute tpus queued-resources create "$NAME" "--node-id=$NAME" "${LOCATION[@]}" \
  "--accelerator-type=$ACCEL_TYPE" "--runtime-version=$RUNTIME" "${SPOT_FLAG[@]}"
describe=(gcloud compute tpus queued-resources describe "$NAME" "${LOCATION[@]}" "--format=value(state.state)")
if [[ "$DRY_RUN" == 1 ]]; then
  printf '# then, every %ss until it prints ACTIVE:\n' "$POLL_SECONDS"
  run "${describe[@]}"
  exit 0
fi
while true; do
  state=$("${describe[@]}")
  case "$state" in
    ACTIVE) printf '%s: %s is ACTIVE (%s, %s hosts)\n' "$SCRIPT_NAME" "$NAME" "$ACCEL_TYPE" "$ACCEL_HOSTS" >&2; exit 0 ;;
    FAILED | SUSPENDED) die "queued resource $NAME is $state; see: gcloud compute tpus queued-resources describe $NAME --zone=$ZONE" ;;
    *) printf '%s: %s is %s; waiting\n' "$SCRIPT_NAME" "$NAME" "${state:-unknown}" >&2; sleep "$POLL_SECONDS" ;;
  esac
done
