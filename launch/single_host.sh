#!/usr/bin/env bash
# Pretrain on all devices of this host, then run the probe job (linear probe, kNN,
# semi-supervised fine-tuning; --evaluations of infomax_jax.probe selects).
#   launch/single_host.sh [--dry-run] CONFIG WORKDIR [--config.x=y ...]
#   e.g. launch/single_host.sh configs/cifar10.py:corinfomax /runs/c10
# Options (anywhere on the line):
#   --dry-run    print the two commands, run nothing
#   -h, --help   this text
set -euo pipefail
source "$(dirname "$0")/options.sh"
[[ $# -ge 2 ]] || die "CONFIG and WORKDIR are required (see --help)"
config=$1 workdir=$2
shift 2
cd "$(dirname "$0")/.."
[[ -f ${config%%:*} ]] || die "config file not found: ${config%%:*}"
run python -m infomax_jax.main --config="$config" --workdir="$workdir" "$@"
run python -m infomax_jax.probe --workdir="$workdir"
