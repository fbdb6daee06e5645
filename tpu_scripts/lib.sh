# shellcheck shell=bash
# Helpers shared by tpu_scripts/*.sh (sourced, not run): argument checks, the accelerator table,
# and `run`, which prints each command exactly and executes it unless --dry-run was given.
# The variables set here (ACCEL_*, LOCATION, ...) and read here (NAME, ZONE) belong to the
# scripts that source this file, which shellcheck cannot see when it checks lib.sh alone.
# shellcheck disable=SC2034,SC2153

set -euo pipefail

SCRIPT_NAME=$(basename "$0")
DRY_RUN=0
PROJECT=""

# Where each worker keeps its environment and logs: $HOME is expanded there, not here.
# shellcheck disable=SC2016
REMOTE_VENV='$HOME/roformer-venv' REMOTE_LOGS='$HOME/roformer-logs'

die() {
  printf '%s: error: %s\n' "$SCRIPT_NAME" "$*" >&2
  exit 2
}

# Single-quotes a word for the shell when it needs it, so printed commands paste back verbatim.
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

quote_all() {
  local out="" word
  for word in "$@"; do
    out+="${out:+ }$(quote "$word")"
  done
  printf '%s' "$out"
}

# Prints the command; runs it unless DRY_RUN=1. In a real run the echo goes to stderr (a log),
# in a dry run to stdout (the commands are the output).
run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    quote_all "$@"
    printf '\n'
  else
    printf '+ %s\n' "$(quote_all "$@")" >&2
    "$@"
  fi
}

# Value of an option that takes one: dies with the option's name when it is missing.
need_value() {
  local option=$1
  shift
  if [[ $# -lt 1 || "$1" == --* ]]; then
    die "$option needs a value"
  fi
}

require() {
  local option=$1 value=$2
  [[ -n "$value" ]] || die "missing required option $option (see --help)"
}

# The options every slice script takes: --name, --zone, --project, --dry-run and -h/--help (which
# calls the script's `usage`). Sets SHIFT to the words it used, 0 when $1 is none of them; a script's
# option loop starts with:  common_option "$@"; if ((SHIFT)); then shift "$SHIFT"; continue; fi
common_option() {
  SHIFT=0
  case "$1" in
    --name) need_value "$@"; NAME=$2; SHIFT=2 ;;
    --zone) need_value "$@"; ZONE=$2; SHIFT=2 ;;
    --project) need_value "$@"; PROJECT=$2; SHIFT=2 ;;
    --dry-run) DRY_RUN=1; SHIFT=1 ;;
    -h | --help) usage; exit 0 ;;
  esac
}

# --name and --zone are given and the name is one gcloud accepts.
require_slice() {
  require --name "$NAME"
  require --zone "$ZONE"
  check_name --name "$NAME"
}

# Accelerator table. Sets ACCEL_FAMILY, ACCEL_TYPE (gcloud's name), ACCEL_RUNTIME (the default
# software version, cloud.google.com/tpu/docs/runtimes), ACCEL_CHIPS and ACCEL_HOSTS.
# v4 / v5p sizes count TensorCores (2 per chip, 4 chips per host); v5e / v6e sizes count chips
# (up to 8 on one host, 4 per host in multi-host slices).
parse_accelerator() {
  local spec=$1 family size
  if [[ ! "$spec" =~ ^(v4|v5p|v5e|v5litepod|v6e)-([0-9]+)$ ]]; then
    die "--accelerator $(quote "$spec"): expected v4-N, v5e-N (or v5litepod-N), v5p-N or v6e-N, e.g. v5e-16"
  fi
  family=${BASH_REMATCH[1]}
  size=${BASH_REMATCH[2]}
  case "$family" in
    v4 | v5p)
      local max=4096
      [[ "$family" == v5p ]] && max=12288
      if ((size < 8 || size % 8 != 0 || size > max)); then
        die "--accelerator $spec: $family sizes count TensorCores: a multiple of 8 from 8 to $max (e.g. ${family}-32)"
      fi
      ACCEL_FAMILY=$family
      ACCEL_TYPE="$family-$size"
      ACCEL_CHIPS=$((size / 2))
      ACCEL_HOSTS=$((size / 8))
      if [[ "$family" == v4 ]]; then ACCEL_RUNTIME=tpu-ubuntu2204-base; else ACCEL_RUNTIME=v2-alpha-tpuv5; fi
      ;;
    v5e | v5litepod | v6e)
      case "$size" in
        1 | 4 | 8 | 16 | 32 | 64 | 128 | 256) ;;
        *) die "--accelerator $spec: ${family/v5litepod/v5e} slices have 1, 4, 8, 16, 32, 64, 128 or 256 chips" ;;
      esac
      ACCEL_CHIPS=$size
      if ((size <= 8)); then ACCEL_HOSTS=1; else ACCEL_HOSTS=$((size / 4)); fi
      if [[ "$family" == v6e ]]; then
        ACCEL_FAMILY=v6e
        ACCEL_TYPE="v6e-$size"
        ACCEL_RUNTIME=v2-alpha-tpuv6e
      else
        ACCEL_FAMILY=v5e
        ACCEL_TYPE="v5litepod-$size"
        ACCEL_RUNTIME=v2-alpha-tpuv5-lite
      fi
      ;;
  esac
}

check_name() {
  local option=$1 value=$2
  # GCE resource names: lowercase letter first, then lowercase letters, digits, hyphens; <= 63.
  if [[ ! "$value" =~ ^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$ ]]; then
    die "$option $(quote "$value"): use lowercase letters, digits and hyphens, starting with a letter (max 63)"
  fi
}

check_gcs() {
  local option=$1 value=$2
  if [[ ! "$value" =~ ^gs://[a-z0-9][-a-z0-9_.]{1,221}[a-z0-9](/.*)?$ ]]; then
    die "$option $(quote "$value"): must be a GCS path gs://BUCKET/..., which every worker can read and write"
  fi
}

# The gcloud options every TPU command shares.
location_flags() {
  LOCATION=("--zone=$ZONE")
  if [[ -n "$PROJECT" ]]; then LOCATION+=("--project=$PROJECT"); fi
}

# `gcloud compute tpus tpu-vm ssh` on one worker or all of them.
tpu_ssh() {
  local worker=$1 command=$2
  run gcloud compute tpus tpu-vm ssh "$NAME" "${LOCATION[@]}" "--worker=$worker" "--command=$command"
}

# pretrain/configs/<name>.py must exist when this checkout has the pretrain package.
check_config() {
  local name=$1 configs
  configs="$(dirname "${BASH_SOURCE[0]}")/../pretrain/configs"
  if [[ ! "$name" =~ ^[A-Za-z0-9_]+$ ]]; then
    die "--config $(quote "$name"): give a config name from pretrain/configs/, e.g. roformer_v2_base"
  fi
  if [[ -d "$configs" && ! -f "$configs/$name.py" ]]; then
    local known
    known=$(find "$configs" -maxdepth 1 -name '*.py' ! -name '__init__.py' ! -name 'common.py' -printf '%f\n' |
      sed 's/\.py$//' | sort | tr '\n' ' ')
    die "--config $name: no pretrain/configs/$name.py; known: ${known% }"
  fi
}

# Extra arguments for pretrain.train must be config overrides.
check_overrides() {
  local arg
  for arg in "$@"; do
    if [[ ! "$arg" =~ ^--config\.[A-Za-z0-9_.]+=.* ]]; then
      die "extra argument $(quote "$arg"): only --config.key=value overrides may follow --"
    fi
  done
}
