#!/usr/bin/env bash
# N training processes on this machine joined by an explicit coordinator: the multi-host code path
# without a cluster (CPU: each process gets D fake devices and gloo collectives).
#
#   launch/local_multiprocess.sh [--dry-run] [--processes=2] [--devices_per_process=2] [--port=12355] \
#       -- --config=configs/shapes_tiny.py --workdir=workdirs/local2
#
# Everything after -- goes to `python -m t2ijax.main`. SIGTERM to this script reaches every process
# (each writes the agreed checkpoint and exits 75) and the script exits 75 too. When the processes
# exit 75 on their own (a SIGTERM sent to them), the job starts again and resumes, unless --no-restart.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

processes=2
devices=2
port=12355
restart=1
python=${PYTHON:-python}
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --processes=*) processes=$(value "$1") ;;
    --devices_per_process=*) devices=$(value "$1") ;;
    --port=*) port=$(value "$1") ;;
    --no-restart) restart=0 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    --) shift; break ;;
    *) die "unknown option $1 (training flags go after --)" ;;
  esac
  shift
done
[[ "$processes" =~ ^[1-9][0-9]*$ && "$devices" =~ ^[1-9][0-9]*$ ]] || die "--processes and --devices_per_process must be positive integers"

start() {
  local i
  pids=()
  for ((i = 0; i < processes; i++)); do
    local command=(env "XLA_FLAGS=--xla_force_host_platform_device_count=$devices" "$python" -m t2ijax.main "$@"
      "--config.distributed.coordinator_address=127.0.0.1:$port"
      "--config.distributed.num_processes=$processes" "--config.distributed.process_id=$i")
    if [[ "$DRY_RUN" == 1 ]]; then
      run "${command[@]}"
    else
      "${command[@]}" &
      pids+=("$!")
    fi
  done
}

require_training_flags "$@"
check_install "$python" "$@"
stopping=0
stop_all() {
  stopping=1
  kill -TERM "${pids[@]}" 2>/dev/null || true
}

while true; do
  start "$@"
  [[ "$DRY_RUN" == 1 ]] && exit 0
  trap stop_all TERM INT
  codes=()
  for pid in "${pids[@]}"; do
    while true; do
      code=0
      wait "$pid" || code=$?
      # A trapped signal ends `wait` early (status > 128) while the process is still writing its checkpoint.
      if ((code > 128)) && kill -0 "$pid" 2>/dev/null; then continue; fi
      break
    done
    codes+=("$code")
  done
  trap - TERM INT
  echo "exit codes: ${codes[*]}" >&2
  preempted=1
  for code in "${codes[@]}"; do [[ "$code" == "$EXIT_PREEMPTED" ]] || preempted=0; done
  if [[ "$preempted" == 1 && "$restart" == 1 && "$stopping" == 0 ]]; then
    echo "preempted: starting again from the checkpoint" >&2
    continue
  fi
  for code in "${codes[@]}"; do [[ "$code" == 0 ]] || exit "$code"; done
  exit 0
done
