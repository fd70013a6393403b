"""SIGTERM (what TPU VMs and SLURM send before evicting a job) and SIGINT (Ctrl-C) turned into a
checkpoint at the current step and a clean exit with EXIT_CODE.

In the training loop, one process: a handler notes the signal (a second one while the checkpoint
is written changes nothing) and the loop stops after the step in flight. Several processes: JAX's
preemption service (started by jax.distributed.initialize) catches SIGTERM on any host and picks
the step at which every host stops, so all of them save the same one; SIGINT is handed to it as a
SIGTERM to the same process.
Before the loop (setup: data, compilation), nothing of the run is being written: on one process
either signal ends it at once with EXIT_CODE (`exit_during_setup`); on several, the service stops
the run at its first steps, after a checkpoint, with the same code. A scheduler requeues either way.
"""
import os
import signal
import threading

import jax
from absl import logging
from jax.experimental import multihost_utils

EXIT_CODE = 75  # sysexits' EX_TEMPFAIL: stopped on request with a checkpoint; rerun the same command


class Preempted(Exception):
    def __init__(self, step: int, cause: str):
        super().__init__(f"{cause} at step {step}: checkpoint written at step {step}; rerun the same command to "
                         "resume")
        self.step = step


def _exit_now(signum, frame) -> None:
    os.write(2, f"{signal.Signals(signum).name} during setup, before the first step: stopped with exit code "
                f"{EXIT_CODE}, nothing to save; rerun the same command to resume\n".encode())
    os._exit(EXIT_CODE)


def _forward_as_sigterm(signum, frame) -> None:
    """Several processes: JAX's preemption service listens for SIGTERM only."""
    logging.warning("%s: handing it to the preemption service as SIGTERM", signal.Signals(signum).name)
    os.kill(os.getpid(), signal.SIGTERM)


def exit_during_setup() -> None:
    """Called by the training CLI before anything else: SIGTERM and SIGINT end the process at once with
    EXIT_CODE until the loop starts (jax.distributed.initialize then takes SIGTERM over on several processes)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_now)


def forward_sigint_if_distributed() -> None:
    """After jax.distributed.initialize: on several processes SIGINT becomes the service's SIGTERM."""
    if jax.process_count() > 1:
        signal.signal(signal.SIGINT, _forward_as_sigterm)


class PreemptionWatch:
    """`reached(step)` is True once the run should save at `step` and stop. A context manager: the
    loop's signal handlers are installed only while the loop runs."""

    def __init__(self):
        self.cause = ""  # the first signal's name, once one came
        self._previous = {}

    def __enter__(self) -> "PreemptionWatch":
        if threading.current_thread() is threading.main_thread():
            signals = (signal.SIGTERM, signal.SIGINT) if jax.process_count() == 1 else (signal.SIGINT,)
            for signum in signals:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    def _on_signal(self, signum, frame) -> None:
        if not self.cause:
            self.cause = signal.Signals(signum).name
            logging.warning("%s: saving a checkpoint after the current step, then exiting", self.cause)
        if jax.process_count() > 1:
            os.kill(os.getpid(), signal.SIGTERM)

    def reached(self, step: int) -> bool:
        if jax.process_count() > 1:
            stop = multihost_utils.reached_preemption_sync_point(step)
            self.cause = self.cause or ("preempted" if stop else "")
            return stop
        return bool(self.cause)
