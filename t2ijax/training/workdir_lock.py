"""One trainer per workdir: an exclusive lock held for the run's lifetime.

The lock is a POSIX record lock (fcntl.lockf) on `<workdir>/run.lock`, which also names its holder
(host, pid, start time). The kernel (or an NFS server, once the client's lease lapses) drops the lock
when the holding process dies, however it dies, so a crashed run leaves no stale lock to clear by
hand: the next start takes the run over. Only process 0 of a job locks; the job's other processes
share its decision. Locks are per process: a second Run in the same process (a notebook cell run
again) is not refused.

A workdir in a bucket (gs://) is not locked: an object cannot be locked, and a lease object created
with a generation precondition could not be tested here (the GCS emulator ignores preconditions).
Whoever starts the job (the launch script, the scheduler) must run one trainer per gs:// workdir;
one warning says so (docs/reliability.md).
"""
import datetime
import fcntl
import json
import os
import socket

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from t2ijax import storage
from t2ijax.errors import ConfigError

LOCK_FILE = "run.lock"


class WorkdirInUse(ConfigError):
    """Another live trainer holds the workdir's lock."""


class WorkdirLock:
    """Holds `<workdir>/run.lock` from `acquire()` until `release()` or the process ends."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, LOCK_FILE)
        self._fd: int | None = None

    def acquire(self) -> "WorkdirLock":
        """Takes the lock, or raises WorkdirInUse naming the trainer that holds it, on every process."""
        if storage.is_url(self.path):
            if jax.process_index() == 0:
                logging.warning("%s is in a bucket, which cannot be locked: nothing stops a second trainer in "
                                "it, so start one job per workdir (docs/reliability.md)", os.path.dirname(self.path))
            return self
        holder = self._try_lock() if jax.process_index() == 0 else ""
        if jax.process_count() > 1:
            refused = multihost_utils.broadcast_one_to_all(np.int32(bool(holder)))
            holder = holder or ("another trainer" if refused else "")
        if holder:
            raise WorkdirInUse(f"{os.path.dirname(self.path)} is in use by {holder}; wait for that run to end or stop "
                              "it (a run that died frees it by itself), or pass another --workdir")
        return self

    def _try_lock(self) -> str:
        """'' once the lock is ours, else a description of its holder."""
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)  # local: acquire() returned for a bucket
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ConfigError(f"{os.path.dirname(self.path)} cannot be written ({e.strerror}); make it writable or "
                              "pass another --workdir") from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _describe(os.read(fd, 4096))
            os.close(fd)
            return holder
        me = {"host": socket.gethostname(), "pid": os.getpid(),
              "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        self._fd = fd
        return ""

    def release(self) -> None:
        """Frees the lock (closing the file drops it); the file stays, naming the last holder."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _describe(content: bytes) -> str:
    try:
        holder = json.loads(content)
        return f"another trainer (host {holder['host']}, pid {holder['pid']}, started {holder['started']})"
    except (ValueError, KeyError, TypeError):
        return "another trainer (it has not written its name yet)"
