# Sourced by the launchers after `set -euo pipefail`: the options that count wherever they stand
# (also among the training flags at the end), and what they share.
#   --dry-run    `run` prints each command instead of running it
#   -h, --help   prints the launcher's leading comment block and exits
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() { echo "error: $*" >&2; exit 2; }
run() { if [[ $dry_run == 1 ]]; then printf '%q ' "$@"; echo; else "$@"; fi; }
dry_run=0
args=()
for arg in "$@"; do
  case $arg in
    --dry-run) dry_run=1 ;;
    -h|--help) usage; exit 0 ;;
    *) args+=("$arg") ;;
  esac
done
set -- ${args[@]+"${args[@]}"}
