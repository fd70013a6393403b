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
