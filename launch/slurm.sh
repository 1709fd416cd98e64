#!/usr/bin/env bash
# Pretrain on a multi-node SLURM GPU allocation, then run the probe job (linear probe, kNN,
# semi-supervised fine-tuning) on the first node.
#   sbatch --nodes=2 --gpus-per-node=8 --ntasks-per-node=1 launch/slurm.sh CONFIG WORKDIR [--config.x=y ...]
#   sbatch --nodes=2 --gpus-per-node=8 --ntasks-per-node=8 launch/slurm.sh --per-gpu CONFIG WORKDIR ...
# Options:
#   --per-gpu     one process per GPU (each sees only its GPU); default: one process per node
#                 seeing all of its GPUs (fewer processes, NCCL inside the node)
#   --port PORT   coordinator port on the first node (default 12355)
#   --dry-run     print the srun commands, run nothing (anywhere on the line; outside an
#                 allocation the first node shows as <head-node>)
#   -h, --help    this text
# The coordinator is the first host of SLURM_JOB_NODELIST; SLURM_NTASKS and SLURM_PROCID give
# --num_processes / --process_id. WORKDIR must be on a file system every node sees.
# Install first on the cluster: pip install -r requirements.txt "jax[cuda12]==0.10.2"
set -euo pipefail
# sbatch runs a copy of this script from its spool directory: options.sh is found from the
# submission directory (the repository root, as the examples above submit from).
source "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}/launch/options.sh"
per_gpu=0 port=12355
while [[ $# -gt 0 && $1 == --* ]]; do
  case $1 in
    --per-gpu) per_gpu=1; shift ;;
    --port) port=${2:?--port needs a value}; shift 2 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[[ $# -ge 2 ]] || die "CONFIG and WORKDIR are required (see --help)"
[[ $dry_run == 1 || ( -n ${SLURM_JOB_NODELIST:-} && -n ${SLURM_NTASKS:-} ) ]] ||
  die "not inside a SLURM allocation (SLURM_JOB_NODELIST / SLURM_NTASKS unset): submit with sbatch"
config=$1 workdir=$2
shift 2
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
[[ -f ${config%%:*} ]] || die "config file not found: ${config%%:*}"
head_node='<head-node>'
if [[ -z ${SLURM_JOB_NODELIST:-} ]]; then
  :   # dry run outside an allocation
elif command -v scontrol >/dev/null; then
  head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
elif [[ $SLURM_JOB_NODELIST =~ ^([^,\[]+)(\[([0-9]+))? ]]; then   # node[01-04,07] → node01
  head_node=${BASH_REMATCH[1]}${BASH_REMATCH[3]}
fi

extra=''
[[ $# -gt 0 ]] && extra=" $(printf '%q ' "$@")"
visible=''
[[ $per_gpu == 1 ]] && visible='CUDA_VISIBLE_DEVICES=$SLURM_LOCALID '
train="${visible}exec python -m infomax_jax.main --config=$(printf '%q' "$config") \
--workdir=$(printf '%q' "$workdir") --coordinator=$head_node:$port \
--num_processes=\$SLURM_NTASKS --process_id=\$SLURM_PROCID${extra}"
run srun --kill-on-bad-exit=1 bash -c "$train"
run srun --nodes=1 --ntasks=1 python -m infomax_jax.probe --workdir="$workdir"
