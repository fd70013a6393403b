#!/usr/bin/env bash
# Cloud TPU VMs: create (directly or as a queued resource, several slices for multislice), install
# t2ijax on every worker (launch/lib.sh install_command, with jax[tpu]), mount a data bucket on every
# worker, start training detached on every worker, follow, check and stop it, delete.
#
#   launch/tpu_vm.sh [--dry-run] ACTION --name=NAME --zone=ZONE [options] [-- training flags]
#
# ACTION    create | queue | install | mount | run | logs | status | stop | delete
# --accelerator=v5litepod-64   --version=v2-alpha-tpuv5-lite (runtime)   --project=PROJECT
# --slices=N    queue N slices of the accelerator as one queued resource (multislice)
# --spot        spot capacity (preemptible: SIGTERM, checkpoint, exit 75, the run resumes)
# --repo=URL    git repository installed by `install` (default: this checkout's origin)
# --ref=REF     branch or commit to install (default main)
# --worker=N --node=N   the worker (and slice) whose log `logs` follows (default 0, 0)
# --bucket=BUCKET       the bucket `mount` mounts with gcsfuse (installed if missing) on every worker, at
# --mount_point=DIR     DIR (default /mnt/BUCKET): datasets and caches are local files (docs/launch.md)
#
# `run` starts `python -m t2ijax.main FLAGS` (flags after --) on every worker in a shell detached from
# the ssh session, which starts it again while it exits 75 (preempted) and logs to ~/t2ijax/worker/train.log
# (process 0 also to WORKDIR/train.log, or WORKDIR/logs/ when it is gs://); `stop` sends that shell SIGTERM:
# the run checkpoints, exits 75 and is not started again. jax finds the other workers by itself.
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
worker=0
node=0
bucket=""
mount_point=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    create|queue|install|mount|run|logs|status|stop|delete) action=$1 ;;
    --name=*) name=$(value "$1") ;;
    --zone=*) zone=$(value "$1") ;;
    --project=*) project=$(value "$1") ;;
    --accelerator=*) accelerator=$(value "$1") ;;
    --version=*) version=$(value "$1") ;;
    --slices=*) slices=$(value "$1") ;;
    --spot) spot=1 ;;
    --repo=*) repo=$(value "$1") ;;
    --ref=*) ref=$(value "$1") ;;
    --worker=*) worker=$(value "$1") ;;
    --node=*) node=$(value "$1") ;;
    --bucket=*) bucket=$(value "$1") ;;
    --mount_point=*) mount_point=$(value "$1") ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    --) shift; break ;;
    *) die "unknown option $1 (training flags go after --)" ;;
  esac
  shift
done
[[ -n "$action" ]] || die "give an action: create, queue, install, mount, run, logs, status, stop or delete"
[[ -n "$name" && -n "$zone" ]] || die "--name and --zone are required"
[[ "$slices" =~ ^[1-9][0-9]*$ ]] || die "--slices must be a positive integer"
[[ "$slices" == 1 || "$action" != create ]] || die "--slices=$slices needs a queued resource: use the queue action"
[[ "$worker" =~ ^[0-9]+$ && "$node" =~ ^[0-9]+$ ]] || die "--worker and --node must be worker and slice numbers (0, 1, ...)"
[[ "$action" != run ]] || require_training_flags "$@"
bucket=${bucket#gs://}
bucket=${bucket%/}
[[ "$action" != mount || "$bucket" =~ ^[a-z0-9][a-z0-9._-]+$ ]] ||
  die "mount needs --bucket=BUCKET (a bucket name such as t2ijax-data)"
mount_point=${mount_point:-/mnt/$bucket}

common=(--zone="$zone")
[[ -z "$project" ]] || common+=(--project="$project")
spot_flag=()
[[ "$spot" == 0 ]] || spot_flag=(--spot)

# On every worker, relative to its checkout ~/t2ijax: the detached run's output and the pid of its shell.
worker_log=worker/train.log
worker_pid=worker/train.pid

# What `run` sends every worker: unless a run is going there, launch/lib.sh's tpu_worker_loop (the
# training, started again while it exits 75) in its own session with SIGHUP ignored, so that it outlives
# the ssh connection; process 0 copies its output into the workdir too.
remote_start() {
  local arg workdir=""
  for arg in "$@"; do
    [[ "$arg" != --workdir=* ]] || workdir=$(value "$arg")
  done
  echo "cd ~/t2ijax && mkdir -p worker && if kill -0 \"\$(cat $worker_pid 2>/dev/null)\" 2>/dev/null; then \
echo \"\$(hostname): a run is going (launch/tpu_vm.sh status, stop)\" >&2; exit 1; fi; \
setsid nohup bash -c 'source launch/lib.sh && tpu_worker_loop \"\$@\"' tpu_worker_loop \
$(quote "$worker_pid" "$worker_log" "$workdir" python -m t2ijax.main "$@") >> $worker_log 2>&1 < /dev/null & \
echo \"\$(hostname): started, log ~/t2ijax/$worker_log\""
}

remote_status="cd ~/t2ijax && if kill -0 \"\$(cat $worker_pid 2>/dev/null)\" 2>/dev/null; then state=running; \
else state=\"not running\"; fi; echo \"\$(hostname): \$state: \$(tail -n 1 $worker_log 2>/dev/null)\""
remote_stop="cd ~/t2ijax && if pid=\$(cat $worker_pid 2>/dev/null) && kill -TERM \"\$pid\" 2>/dev/null; then \
echo \"\$(hostname): stopping (SIGTERM): the run checkpoints and exits $EXIT_PREEMPTED\"; \
else echo \"\$(hostname): not running\"; fi"
remote_logs="tail -n 100 -F ~/t2ijax/$worker_log"

# What `mount` sends every worker: gcsfuse installed as Google documents it for Debian and Ubuntu
# (https://cloud.google.com/storage/docs/cloud-storage-fuse/install), then the bucket mounted unless it is
# already, as https://cloud.google.com/storage/docs/cloud-storage-fuse/mount-bucket does, by this user (who
# owns the files). --implicit-dirs shows the folders of objects copied in without folder entries;
# --rename-dir-limit lets a TFDS build rename its finished directory (incomplete.* -> its version), which
# gcsfuse refuses by default on a bucket without hierarchical namespace (the rename copies each file).
remote_mount() {
  local key=/usr/share/keyrings/cloud.google.asc
  echo "if ! command -v gcsfuse > /dev/null; then GCSFUSE_REPO=gcsfuse-\$(lsb_release -c -s) && \
echo \"deb [signed-by=$key] https://packages.cloud.google.com/apt \$GCSFUSE_REPO main\" \
| sudo tee /etc/apt/sources.list.d/gcsfuse.list > /dev/null && \
curl -fsS https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee $key > /dev/null && \
sudo apt-get update -q && sudo apt-get install -y -q fuse gcsfuse; fi && \
if mountpoint -q $(quote "$mount_point"); then echo \"\$(hostname): $(quote "$mount_point") is mounted already\"; \
else sudo mkdir -p $(quote "$mount_point") && sudo chown \"\$(id -u):\$(id -g)\" $(quote "$mount_point") && \
gcsfuse --implicit-dirs --rename-dir-limit=100000 $(quote "$bucket" "$mount_point") && \
echo \"\$(hostname): gs://$bucket mounted at $(quote "$mount_point")\"; fi"
}

# One command on the given workers (all, or a number) of the given slices (all, or a number).
on_workers() {
  local workers=$1 nodes=$2
  if [[ "$slices" == 1 ]]; then
    run gcloud compute tpus tpu-vm ssh "$name" "${common[@]}" --worker="$workers" --command="$3"
  else
    run gcloud alpha compute tpus queued-resources ssh "$name" "${common[@]}" --node="$nodes" --worker="$workers" \
      --command="$3"
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
    on_workers all all "$(quote git clone "$repo" t2ijax) || true; cd ~/t2ijax && $(quote git fetch origin "$ref") && \
$(quote git checkout FETCH_HEAD) && $(install_command 'jax[tpu]')" ;;
  mount) on_workers all all "$(remote_mount)" ;;
  run)
    on_workers all all "$(remote_start "$@")" ;;
  logs) on_workers "$worker" "$node" "$remote_logs" ;;
  status) on_workers all all "$remote_status" ;;
  stop) on_workers all all "$remote_stop" ;;
  delete)
    if [[ "$slices" == 1 ]]; then
      run gcloud compute tpus tpu-vm delete "$name" "${common[@]}" --quiet
    else
      run gcloud compute tpus queued-resources delete "$name" "${common[@]}" --force --quiet
    fi ;;
esac
