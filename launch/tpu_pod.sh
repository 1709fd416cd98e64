#!/usr/bin/env bash
# Pretrain on a Cloud TPU VM pod slice (e.g. v4-32: 4 hosts × 4 chips), then run the probe job
# (linear probe, kNN, semi-supervised fine-tuning) on worker 0.
#   launch/tpu_pod.sh [options] CONFIG WORKDIR [--config.x=y ...]
# Options:
#   --name NAME          TPU VM name (required)
#   --zone ZONE          GCP zone (required), e.g. us-central2-b
#   --accelerator TYPE   accelerator type for --create (default v4-32)
#   --version VERSION    TPU VM runtime for --create (default tpu-ubuntu2204-base)
#   --create             create the TPU VM first
#   --skip-install       the code and packages are already on every worker
#   --dry-run            print the gcloud commands, run nothing (anywhere on the line)
#   -h, --help           this text
# WORKDIR must be shared by every host (a gs:// bucket): orbax saves and restores from all hosts.
# The repository (this checkout) is copied to ~/infomax_jax on every worker, requirements and
# jax[tpu] are installed, then the same command runs on all workers (--worker=all) with
# --distributed: jax.distributed finds the pod's coordinator by itself. Only process 0 logs;
# the probe runs on worker 0 afterwards.
#   e.g. launch/tpu_pod.sh --name ssl-v4 --zone us-central2-b --create \
#          configs/imagenet100.py:r50,corinfomax gs://bucket/in100_r50 --config.data.path=/data/in100
set -euo pipefail
source "$(dirname "$0")/options.sh"
name='' zone='' accelerator=v4-32 version=tpu-ubuntu2204-base create=0 install=1
while [[ $# -gt 0 && $1 == --* ]]; do
  case $1 in
    --name) name=${2:?--name needs a value}; shift 2 ;;
    --zone) zone=${2:?--zone needs a value}; shift 2 ;;
    --accelerator) accelerator=${2:?--accelerator needs a value}; shift 2 ;;
    --version) version=${2:?--version needs a value}; shift 2 ;;
    --create) create=1; shift ;;
    --skip-install) install=0; shift ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[[ -n $name && -n $zone ]] || die "--name and --zone are required (see --help)"
[[ $# -ge 2 ]] || die "CONFIG and WORKDIR are required (see --help)"
config=$1 workdir=$2
shift 2
cd "$(dirname "$0")/.."
[[ -f ${config%%:*} ]] || die "config file not found: ${config%%:*}"

tpu=(gcloud compute tpus tpu-vm)
extra=''
[[ $# -gt 0 ]] && extra=" $(printf '%q ' "$@")"
if [[ $create == 1 ]]; then
  run "${tpu[@]}" create "$name" --zone="$zone" --accelerator-type="$accelerator" \
      --version="$version"
fi
if [[ $install == 1 ]]; then
  run "${tpu[@]}" scp --recurse --worker=all --zone="$zone" \
      configs infomax_jax launch requirements.txt "$name":~/infomax_jax/
  run "${tpu[@]}" ssh "$name" --worker=all --zone="$zone" --command \
      "cd ~/infomax_jax && pip install -q -r requirements.txt && pip install -q 'jax[tpu]==0.10.2'"
fi
run "${tpu[@]}" ssh "$name" --worker=all --zone="$zone" --command \
    "cd ~/infomax_jax && python -m infomax_jax.main --distributed --config=$(printf '%q' "$config") --workdir=$(printf '%q' "$workdir")$extra"
run "${tpu[@]}" ssh "$name" --worker=0 --zone="$zone" --command \
    "cd ~/infomax_jax && python -m infomax_jax.probe --workdir=$(printf '%q' "$workdir")"
