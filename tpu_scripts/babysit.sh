#!/usr/bin/env bash
# Keeps a pretraining run alive on a (spot) TPU slice: watches it, and after a preemption deletes,
# recreates, sets up and relaunches it; the run resumes from the latest checkpoint in WORKDIR.
#
#   tpu_scripts/babysit.sh --name NAME --zone ZONE --accelerator v5e-16 [--spot] [--queued]
#       (--git-ref REF [--repo URL] | --wheel FILE) --config NAME --workdir gs://... --data-dir gs://...
#       [--project P] [--interval 300] [--max-recreates 20] [--dry-run] [-- --config.key=value ...]
#
# Every --interval seconds it reads the slice's state. Preempted / terminated / gone: recreate
# and relaunch. Ready: worker 0's exit code says finished (0: stop babysitting), refused (2: a bad
# input or a step too large for the memory; 3: a non-finite loss: stop, since a rerun would fail
# the same way), stopped or crashed (75, others: relaunch) or still running. --dry-run prints the
# watch commands and the recovery sequence.

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
HERE=$(dirname "${BASH_SOURCE[0]}")

usage() { sed -n '2,14s/^# \{0,1\}//p' "$0"; }

NAME="" ZONE="" QUEUED=0 INTERVAL=300 MAX_RECREATES=20
COMMON=() CREATE=() SETUP=() LAUNCH=() OVERRIDES=()
while [[ $# -gt 0 ]]; do
  common_option "$@"
  if ((SHIFT)); then
    if ((SHIFT == 2)); then COMMON+=("$1" "$2"); fi  # --name, --zone, --project go to every step
    shift "$SHIFT"
    continue
  fi
  case "$1" in
    --accelerator | --runtime-version) need_value "$@"; CREATE+=("$1" "$2"); shift 2 ;;
    --spot) CREATE+=("$1"); shift ;;
    --queued) QUEUED=1; CREATE+=("$1"); shift ;;
    --git-ref | --repo | --wheel | --jax-version) need_value "$@"; SETUP+=("$1" "$2"); shift 2 ;;
    --config | --workdir | --data-dir) need_value "$@"; LAUNCH+=("$1" "$2"); shift 2 ;;
    --interval) need_value "$@"; INTERVAL=$2; shift 2 ;;
    --max-recreates) need_value "$@"; MAX_RECREATES=$2; shift 2 ;;
    --) shift; OVERRIDES=("$@"); break ;;
    *) die "unknown option $(quote "$1") (see --help; config overrides go after --)" ;;
  esac
done
[[ "$INTERVAL" =~ ^[1-9][0-9]*$ ]] || die "--interval $(quote "$INTERVAL"): seconds, a positive integer"
[[ "$MAX_RECREATES" =~ ^[0-9]+$ ]] || die "--max-recreates $(quote "$MAX_RECREATES"): a non-negative integer"
[[ " ${CREATE[*]} " == *" --accelerator "* ]] || die "missing required option --accelerator (needed to recreate)"
TEARDOWN=("${COMMON[@]}")
if [[ "$QUEUED" == 1 ]]; then TEARDOWN+=(--queued); fi

# Each step is its own script; checking them all up front makes a typo fail now, not after the
# first preemption hours from here.
step() {
  local script=$1
  shift
  if [[ "$DRY_RUN" == 1 ]]; then
    "$HERE/$script" --dry-run "$@"  # first: launch.sh's arguments end with -- overrides
  else
    "$HERE/$script" "$@"
  fi
}
"$HERE/create.sh" "${COMMON[@]}" "${CREATE[@]}" --dry-run > /dev/null
"$HERE/setup.sh" "${COMMON[@]}" "${SETUP[@]}" --dry-run > /dev/null
"$HERE/launch.sh" "${COMMON[@]}" "${LAUNCH[@]}" --dry-run -- "${OVERRIDES[@]}" > /dev/null
location_flags

# Chained with && (not set -e): a failed step, e.g. no spot capacity right now, is retried at the
# next check instead of ending the babysitter.
recover() {
  step teardown.sh "${TEARDOWN[@]}" || true  # already gone is fine
  step create.sh "${COMMON[@]}" "${CREATE[@]}" && step setup.sh "${COMMON[@]}" "${SETUP[@]}" && relaunch
}

relaunch() {
  step launch.sh "${COMMON[@]}" "${LAUNCH[@]}" -- "${OVERRIDES[@]}"
}

if [[ "$QUEUED" == 1 ]]; then
  state_cmd=(gcloud compute tpus queued-resources describe "$NAME" "${LOCATION[@]}" "--format=value(state.state)")
else
  state_cmd=(gcloud compute tpus tpu-vm describe "$NAME" "${LOCATION[@]}" "--format=value(state)")
fi
exit_cmd=(gcloud compute tpus tpu-vm ssh "$NAME" "${LOCATION[@]}" --worker=0
  "--command=cat $REMOTE_LOGS/exit_code 2>/dev/null || echo running")

if [[ "$DRY_RUN" == 1 ]]; then
  printf '# every %ss: the slice state\n' "$INTERVAL"
  run "${state_cmd[@]}"
  printf '# when READY/ACTIVE, worker 0'\''s exit code: 0 finished (stop); 2 bad input or out of memory, 3\n'
  printf '# non-finite loss (stop: a relaunch would fail the same way); 75 or other (relaunch); none: running\n'
  run "${exit_cmd[@]}"
  printf '# when PREEMPTED, TERMINATED, FAILED, SUSPENDED or gone (at most %s times): recreate and resume\n' \
    "$MAX_RECREATES"
  recover
  exit 0
fi

log() { printf '%s %s: %s\n' "$(date -u +%FT%TZ)" "$SCRIPT_NAME" "$*" >&2; }

recreates=0
while true; do
  state=$("${state_cmd[@]}" 2>/dev/null || true)
  case "$state" in
    READY | ACTIVE)
      status=$("${exit_cmd[@]}" 2>/dev/null | tail -n 1 || true)
      case "$status" in
        running) ;;
        0) log "training finished on $NAME"; exit 0 ;;
        2 | 3)  # deterministic: the same command would stop the same way, so do not burn the slice on it
          log "training stopped with status $status (2: a bad input or a step too large for the memory;" \
            "3: a non-finite loss); not relaunching. The reason is at the end of worker 0's log" \
            "(tpu_scripts/logs.sh); fix it, then rerun this command"
          exit 1 ;;
        "") log "could not reach worker 0; will retry" ;;
        *)
          log "training exited with status $status; relaunching (resumes from the last checkpoint)"
          relaunch || log "relaunch failed; retrying in ${INTERVAL}s"
          ;;
      esac
      ;;
    CREATING | STARTING | RESTARTING | REPAIRING | PROVISIONING | WAITING_FOR_RESOURCES | ACCEPTED)
      log "$NAME is $state; waiting"
      ;;
    *)
      if ((recreates >= MAX_RECREATES)); then
        die "$NAME is ${state:-gone} and was already recreated $recreates times (--max-recreates)"
      fi
      recreates=$((recreates + 1))
      log "$NAME is ${state:-gone}; recreating ($recreates/$MAX_RECREATES)"
      recover || log "recovery failed; retrying in ${INTERVAL}s"
      ;;
  esac
  sleep "$INTERVAL"
done
