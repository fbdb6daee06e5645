#!/usr/bin/env bash
# Sets up every worker of a TPU slice: Python 3.11 venv, jax[tpu], and this package from a git
# ref or from a wheel built here (python -m pip wheel --no-deps -w dist .).
#
#   tpu_scripts/setup.sh --name NAME --zone ZONE (--git-ref REF [--repo URL] | --wheel FILE)
#                        [--project P] [--jax-version 0.10.2] [--dry-run]
#
# --repo defaults to this checkout's `origin` remote. Safe to re-run: it reinstalls in place.

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { sed -n '2,9s/^# \{0,1\}//p' "$0"; }

NAME="" ZONE="" GIT_REF="" REPO="" WHEEL="" JAX_VERSION=0.10.2
while [[ $# -gt 0 ]]; do
  common_option "$@"; if ((SHIFT)); then shift "$SHIFT"; continue; fi
  case "$1" in
    --git-ref) need_value "$@"; GIT_REF=$2; shift 2 ;;
    --repo) need_value "$@"; REPO=$2; shift 2 ;;
    --wheel) need_value "$@"; WHEEL=$2; shift 2 ;;
    --jax-version) need_value "$@"; JAX_VERSION=$2; shift 2 ;;
    *) die "unknown option $(quote "$1") (see --help)" ;;
  esac
done
require_slice
if [[ -n "$GIT_REF" && -n "$WHEEL" ]] || [[ -z "$GIT_REF" && -z "$WHEEL" ]]; then
  die "give exactly one of --git-ref REF or --wheel FILE"
fi
[[ "$JAX_VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "--jax-version $(quote "$JAX_VERSION"): expected X.Y.Z"
location_flags

if [[ -n "$WHEEL" ]]; then
  [[ -f "$WHEEL" && "$WHEEL" == *.whl ]] || die "--wheel $(quote "$WHEEL"): no such .whl file"
  run gcloud compute tpus tpu-vm scp "$WHEEL" "$NAME:" "${LOCATION[@]}" --worker=all
  PACKAGE="\$HOME/$(basename "$WHEEL")"
else
  if [[ -z "$REPO" ]]; then
    REPO=$(git -C "$(dirname "${BASH_SOURCE[0]}")" remote get-url origin 2>/dev/null) ||
      die "--repo: this checkout has no 'origin' remote; pass --repo URL"
  fi
  [[ "$GIT_REF" =~ ^[A-Za-z0-9._/-]+$ ]] || die "--git-ref $(quote "$GIT_REF"): not a branch, tag or commit"
  PACKAGE=$(quote "roformer-jax @ git+$REPO@$GIT_REF")
fi

# Ubuntu 22.04 TPU images ship Python 3.10; JAX needs >= 3.11. The venv keeps the image's
# system packages out of the way.
remote="set -euo pipefail
sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11 python3.11-venv git
python3.11 -m venv $REMOTE_VENV
$REMOTE_VENV/bin/python -m pip install -q --upgrade pip
$REMOTE_VENV/bin/python -m pip install -q 'jax[tpu]==$JAX_VERSION' gcsfs $PACKAGE
mkdir -p $REMOTE_LOGS
$REMOTE_VENV/bin/python -c 'import jax, roformer_jax, pretrain.train; print(jax.__version__, \"ok\")'"
tpu_ssh all "$remote"
