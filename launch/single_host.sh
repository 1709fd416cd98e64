#!/usr/bin/env bash
# Pretrain, then linear-probe, on all devices of this host.
#   launch/single_host.sh CONFIG WORKDIR [--config.x=y ...]
#   e.g. launch/single_host.sh configs/cifar10.py:corinfomax /runs/c10 --config.data.source=archive \
#          --config.data.path=/data/cifar10-jpeg.tar.gz
set -euo pipefail
usage() { sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; }
if [[ ${1:-} == -h || ${1:-} == --help ]]; then usage; exit 0; fi
if [[ $# -lt 2 ]]; then usage >&2; exit 2; fi
config=$1 workdir=$2
shift 2
cd "$(dirname "$0")/.."
python -m infomax_jax.main --config="$config" --workdir="$workdir" "$@"
python -m infomax_jax.probe --workdir="$workdir"
