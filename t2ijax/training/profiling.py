"""The transfer guard around the train step, and a jax.profiler trace of the window of steps
config.profile names, for TensorBoard's profile plugin (docs/reliability.md, "Profiling a window
of steps")."""
import os
import shutil
import tempfile

import jax
import ml_collections
from absl import logging

from t2ijax import storage


def no_implicit_transfers():
    """Around the compiled step: an implicit host<->device copy inside (a NumPy array handed to it, a
    device value read as a Python number) raises instead of silently stalling every step; explicit ones
    (jax.device_put, jax.device_get) are allowed. The batch is assembled outside: on several processes
    jax 0.10's make_array_from_process_local_data makes a transfer the guard takes for an implicit one."""
    return jax.transfer_guard("disallow")


def profile_dir(workdir: str) -> str:
    """Where traces go: <dir>/plugins/profile/<timestamp>/<host>.xplane.pb, one run per trace."""
    return os.fspath(storage.resolve(workdir) / "profile")


def upload(local: str, url: str) -> None:
    """Copies the files under the local directory `local` to the same places under `url`."""
    for root, _, names in os.walk(local):
        target = storage.Path(url) / os.path.relpath(root, local)
        target.mkdir(parents=True, exist_ok=True)
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                (target / name).write_bytes(f.read())


class ProfileWindow:
    """Traces steps start_step .. start_step + steps - 1 of config.profile on the processes it names (all
    when `hosts` is empty) into profile_dir(workdir). A run resumed past start_step traces nothing.

    jax.profiler writes through XLA's C++ file system (TensorFlow's), which reaches the real GCS service
    only (never an emulator), so a trace for a gs:// workdir is written to a local temporary directory and uploaded
    through t2ijax.storage when it stops."""

    def __init__(self, profile: ml_collections.ConfigDict, workdir: str, process_index: int):
        self.start, self.end = profile.start_step, profile.start_step + profile.steps
        self.here = profile.start_step >= 0 and (not profile.hosts or process_index in profile.hosts)
        self.directory = profile_dir(workdir)
        self.tracing, self.done = False, self.start
        self.local: str | None = None  # the local directory of a trace bound for a bucket

    def before_step(self, step: int) -> None:
        if self.here and step == self.start:
            self.local = tempfile.mkdtemp(prefix="t2ijax-profile-") if storage.is_url(self.directory) else None
            jax.profiler.start_trace(self.local or self.directory)
            self.tracing = True

    def after_step(self, step: int, outputs) -> None:
        """`step`: steps done; `outputs` of the last step, waited for so that its work ends in the trace."""
        self.done = step
        if self.tracing and step >= self.end:
            self.stop(outputs)

    def stop(self, outputs=None) -> None:
        if not self.tracing:
            return
        jax.block_until_ready(outputs)
        jax.profiler.stop_trace()
        self.tracing = False
        if self.local:
            upload(self.local, self.directory)
            shutil.rmtree(self.local)
        logging.info("profile of steps %d..%d written under %s (tensorboard --logdir %s, Profile tab)", self.start,
                     self.done - 1, self.directory, self.directory)

    def __enter__(self) -> "ProfileWindow":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()  # the run ended (or stopped) inside the window: keep what was traced
