"""SIGTERM, what TPU VMs and SLURM send before evicting a job, turned into a checkpoint at the
current step and a clean exit with EXIT_CODE.

One process: a handler notes the signal (a second one while the checkpoint is written changes
nothing) and the loop stops after the step in flight. Several processes: JAX's preemption service
(started by jax.distributed.initialize) catches the signal on any host and picks the step at which
every host stops, so all of them save the same one.
"""
import signal
import threading

import jax
from absl import logging
from jax.experimental import multihost_utils

EXIT_CODE = 75  # sysexits' EX_TEMPFAIL: stopped on request with a checkpoint; rerun the same command


class Preempted(Exception):
    def __init__(self, step: int):
        super().__init__(f"preempted: checkpoint written at step {step}; rerun the same command to resume")
        self.step = step


class PreemptionWatch:
    """`reached(step)` is True once the run should save at `step` and stop. A context manager: the
    signal handler is installed only while the loop runs."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self) -> "PreemptionWatch":
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _on_sigterm(self, signum, frame) -> None:
        if not self.requested:
            logging.warning("SIGTERM: saving a checkpoint after the current step, then exiting")
        self.requested = True

    def reached(self, step: int) -> bool:
        if jax.process_count() > 1:
            return multihost_utils.reached_preemption_sync_point(step)
        return self.requested
