"""Barriers that tell a slow process from a dead one.

Every process of a multi-process job publishes a heartbeat (a counter, with its host name) in the
coordination service's key-value store from a daemon thread, and reads everyone's. A barrier (a counter
and a done key in the same store) waits for as long as every heartbeat goes on, and raises
DistributedError on the survivors, naming the silent processes, once one has been silent for the
liveness timeout (config.distributed.liveness_timeout_s).

jax's coordination service has heartbeats of its own, but a process it finds dead ends every other
process with a fatal log (an abort, not an error the CLI can report), so it is given twice the liveness
timeout (start): at a barrier this module answers first; elsewhere (inside a collective) jax's abort
remains the backstop.
"""
import atexit
import math
import socket
import threading
import time

import jax
import orbax.checkpoint as ocp

from t2ijax.errors import DistributedError

_PREFIX = "t2ijax/heartbeat/"


def jax_heartbeat_timeout_s(liveness_timeout_s: float) -> int:
    """jax.distributed.initialize's heartbeat_timeout_seconds: long enough that a barrier reports a
    dead process (within the liveness timeout and two heartbeat periods) before jax aborts."""
    return math.ceil(2 * liveness_timeout_s)


class Heartbeats:
    """This process's heartbeat, every `period_s`, and the last time each process's was seen to change
    (by this process's monotonic clock: no two hosts' clocks are compared)."""

    def __init__(self, liveness_timeout_s: float):
        self.timeout_s = liveness_timeout_s
        self.period_s = min(liveness_timeout_s / 10, 10.0)
        self._client = ocp.multihost.get_jax_distributed_client()
        self._key = f"{_PREFIX}{jax.process_index()}"
        self._host = socket.gethostname()
        now = time.monotonic()
        self._seen = {i: (None, now) for i in range(jax.process_count())}  # index -> (heartbeat, since)
        self._hosts: dict[int, str] = {}
        self._looked = now
        self._stop = threading.Event()
        atexit.register(self._stop.set)  # runs before jax's own teardown, which may wait on the others
        threading.Thread(target=self._run, name="t2ijax-heartbeat", daemon=True).start()

    def _run(self) -> None:
        beat = 0
        try:
            while not self._stop.is_set():
                self._client.key_value_set(self._key, f"{beat} {self._host}", allow_overwrite=True)
                self._look()
                beat += 1
                self._stop.wait(self.period_s)
        except jax.errors.JaxRuntimeError:
            return  # the coordination service is gone: jax ends this process, and the others see it silent

    def _look(self) -> None:
        now = time.monotonic()
        for key, value in self._client.key_value_dir_get(_PREFIX):
            index = int(key.rpartition("/")[2])
            beat, _, host = value.partition(" ")
            self._hosts[index] = host
            if self._seen[index][0] != beat:
                self._seen[index] = (beat, now)
        self._looked = now

    def silent(self) -> dict[int, float]:
        """Seconds each process silent past the liveness timeout has been silent, as of the last look
        (a look delayed on this host delays every process's silence alike)."""
        silences = {i: self._looked - since for i, (_, since) in self._seen.items()}
        return {i: s for i, s in silences.items() if s > self.timeout_s}

    def wait_at_barrier(self, barrier_id: str, timeout_s: float | None) -> None:
        """Returns once every process reaches `barrier_id`; raises DistributedError once a process has
        been silent for the liveness timeout, or after `timeout_s` if given.

        The last process to arrive (by a counter in the key-value store) sets the barrier's done key,
        which the others wait for in slices of a heartbeat period. (jax's own barrier cannot be waited for
        in slices: after a timeout, a process that comes later is out of step with its instance count.)
        """
        key = f"t2ijax/barrier/{barrier_id}"
        if self._client.key_value_increment(key, 1) == len(self._seen):
            self._client.key_value_set(f"{key}/done", "")
            return
        start = time.monotonic()
        while True:
            left = math.inf if timeout_s is None else start + timeout_s - time.monotonic()
            try:
                self._client.blocking_key_value_get(f"{key}/done", max(1, int(1000 * min(self.period_s, left))))
                return
            except jax.errors.JaxRuntimeError as e:
                if "DEADLINE_EXCEEDED" not in str(e):
                    raise
            here = f"process {jax.process_index()} waited at barrier {barrier_id!r}"
            if silent := self.silent():
                names = ", ".join(f"{i} ({'host ' + self._hosts[i] if i in self._hosts else 'never heard from'}, "
                                  f"silent {s:.0f} s)" for i, s in sorted(silent.items()))
                raise DistributedError(
                    f"{here}, but process{'es' * (len(silent) > 1)} {names} sent no heartbeat within "
                    f"config.distributed.liveness_timeout_s={self.timeout_s:g}: dead or cut off from the "
                    "network; see its log, then rerun every process")
            if timeout_s is not None and time.monotonic() - start >= timeout_s:
                raise DistributedError(f"{here} for {timeout_s:g} s, its limit, and not every process came "
                                       "(all still send heartbeats); see the slow processes' logs")
