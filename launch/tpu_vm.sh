#!/usr/bin/env bash
# Cloud TPU VMs: create (directly or as a queued resource, several slices for multislice), install
# t2ijax on every worker (launch/lib.sh install_command, with jax[tpu]), run training on every worker, delete.
#
#   launch/tpu_vm.sh [--dry-run] ACTION --name=NAME --zone=ZONE [options] [-- training flags]
#
# ACTION    create | queue | install | run | delete
# --accelerator=v5litepod-64   --version=v2-alpha-tpuv5-lite (runtime)   --project=PROJECT
# --slices=N    queue N slices of the accelerator as one queued resource (multislice)
# --spot        spot capacity (preemptible: SIGTERM, checkpoint, exit 75, `run` resumes)
# --repo=URL    git repository installed by `install` (default: this checkout's origin)
# --ref=REF     branch or commit to install (default main)
#
# Every worker runs `python -m t2ijax.main FLAGS` (flags after --); jax finds the other workers by
# itself (no coordinator flags on TPU). A run that exits 75 (SIGTERM) starts again and resumes.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

action=""
name=""
zone=""
project=""
accelerator="v5litepod-64"
version="v2-alpha-tpuv5-lite"
slices=1
spot=0
repo=$(git -C "$(dirname "${BASH_SOURCE[0]}")" remote get-url origin 2>/dev/null || echo "")
ref="main"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    create|queue|install|run|delete) action=$1 ;;
    --name=*) name=$(value "$1") ;;
    --zone=*) zone=$(value "$1") ;;
    --project=*) project=$(value "$1") ;;
    --accelerator=*) accelerator=$(value "$1") ;;
    --version=*) version=$(value "$1") ;;
    --slices=*) slices=$(value "$1") ;;
    --spot) spot=1 ;;
    --repo=*) repo=$(value "$1") ;;
    --ref=*) ref=$(value "$1") ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    --) shift; break ;;
    *) die "unknown option $1 (training flags go after --)" ;;
  esac
  shift
done
[[ -n "$action" ]] || die "give an action: create, queue, install, run or delete"
[[ -n "$name" && -n "$zone" ]] || die "--name and --zone are required"
[[ "$slices" =~ ^[1-9][0-9]*$ ]] || die "--slices must be a positive integer"
[[ "$slices" == 1 || "$action" != create ]] || die "--slices=$slices needs a queued resource: use the queue action"

common=(--zone="$zone")
[[ -z "$project" ]] || common+=(--project="$project")
spot_flag=()
[[ "$spot" == 0 ]] || spot_flag=(--spot)

# What every worker runs: the training command, started again while it exits 75 (preempted).
remote_train() {
  local train
  train=$(quote python -m t2ijax.main "$@")
  echo "cd ~/t2ijax && while true; do $train; code=\$?; [ \$code -eq $EXIT_PREEMPTED ] || exit \$code; done"
}

# One command on every worker of every slice.
on_all_workers() {
  if [[ "$slices" == 1 ]]; then
    run gcloud compute tpus tpu-vm ssh "$name" "${common[@]}" --worker=all --command="$1"
  else
    run gcloud alpha compute tpus queued-resources ssh "$name" "${common[@]}" --node=all --worker=all --command="$1"
  fi
}

case "$action" in
  create)
    run gcloud compute tpus tpu-vm create "$name" "${common[@]}" --accelerator-type="$accelerator" \
      --version="$version" "${spot_flag[@]}" ;;
  queue)
    nodes=(--node-id="$name")
    [[ "$slices" == 1 ]] || nodes=(--node-count="$slices" --node-prefix="$name")
    run gcloud compute tpus queued-resources create "$name" "${common[@]}" "${nodes[@]}" \
      --accelerator-type="$accelerator" --runtime-version="$version" "${spot_flag[@]}" ;;
  install)
    [[ -n "$repo" ]] || die "--repo is required (this checkout has no origin remote)"
    on_all_workers "$(quote git clone "$repo" t2ijax) || true; cd ~/t2ijax && $(quote git fetch origin "$ref") && \
$(quote git checkout FETCH_HEAD) && $(install_command 'jax[tpu]')" ;;
  run)
    on_all_workers "$(remote_train "$@")" ;;
  delete)
    if [[ "$slices" == 1 ]]; then
      run gcloud compute tpus tpu-vm delete "$name" "${common[@]}" --quiet
    else
      run gcloud compute tpus queued-resources delete "$name" "${common[@]}" --force --quiet
    fi ;;
esac
