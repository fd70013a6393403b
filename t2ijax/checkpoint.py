"""Orbax checkpoints of the training state: atomic, verified on restore, keep-N, resume from the
newest good one.

Orbax writes a step under a temporary name and renames it once complete, so a step directory is
never partial; what a killed save leaves behind is removed at the next start. Old checkpoints are
deleted (keep-N) only after a newer one is complete. Each checkpoint stores, next to the state, a
digest of every array and the run's counters; a checkpoint that cannot be read or does not match
its digest is moved to `<directory>/corrupt-<step>` and the one before it is used.
"""
import contextlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from t2ijax import sharding
from t2ijax.errors import ConfigError, StorageError
from t2ijax.train_state import TrainState

COUNTERS = ("skipped_steps", "restores", "fallbacks")


class CorruptCheckpoint(Exception):
    """A checkpoint that cannot be read, or whose arrays differ from the digest saved with them."""

    def __init__(self, step: int, problem: str):
        super().__init__(f"checkpoint {step} {problem}")
        self.step = step


def _digest(x: jax.Array) -> jax.Array:
    """A position-weighted sum of the raw bits, mod 2^32: any flipped bit or moved block changes it.
    Integer sums do not depend on the order of addition, so every sharding gives the same value."""
    bits = x.astype(jnp.uint32) if x.dtype.itemsize == 1 else jax.lax.bitcast_convert_type(
        x, jnp.dtype(f"uint{8 * x.dtype.itemsize}")).astype(jnp.uint32)
    index = jnp.zeros(x.shape, jnp.uint32)
    for dim, size in enumerate(x.shape):
        index = index * np.uint32(size) + jax.lax.broadcasted_iota(jnp.uint32, x.shape, dim)
    return jnp.sum(bits * (2 * index + 1), dtype=jnp.uint32)


@jax.jit
def _digests(leaves: list[jax.Array]) -> list[jax.Array]:
    return [_digest(x) for x in leaves]  # scalars: replicated, so every process can read them


def digests(state: TrainState) -> dict[str, int]:
    """One digest per array of `state`, keyed by its path."""
    paths, leaves = zip(*jax.tree_util.tree_leaves_with_path(state))
    return {jax.tree_util.keystr(p): int(v) for p, v in zip(paths, jax.device_get(_digests(list(leaves))))}


class Checkpointer:
    def __init__(self, directory: str, keep: int = 1, async_save: bool = True, read_only: bool = False):
        """`read_only` for readers beside a live run: they must not remove its saves in progress."""
        directory = os.path.abspath(directory)  # orbax's array writer rejects relative paths
        if read_only:
            options = ocp.CheckpointManagerOptions(read_only=True, create=False)
        else:
            options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                                   create=True, cleanup_tmp_directories=True)
        self._manager = ocp.CheckpointManager(directory, options=options)
        self.directory = directory

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    # --- Saving ---------------------------------------------------------------------------------------
    def save(self, state: TrainState, counters: dict[str, int]) -> None:
        """Starts saving `state` at its own step (returns before an async write finishes)."""
        step = int(state.step)
        if step == self._manager.latest_step():
            return
        meta = {"digests": digests(state), "counters": {k: int(counters[k]) for k in COUNTERS}}
        with self._storage_errors(step):
            self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                             meta=ocp.args.JsonSave(meta)))

    def wait(self) -> None:
        """Blocks until pending saves are on disk."""
        with self._storage_errors(None):
            self._manager.wait_until_finished()

    @contextlib.contextmanager
    def _storage_errors(self, step: int | None):
        try:
            yield
        except Exception as error:  # noqa: BLE001 - orbax re-raises its writer threads' errors in many types
            # From the disk, not the manager: a failed save leaves its bookkeeping behind.
            kept = ", ".join(sorted((name for name in os.listdir(self.directory) if name.isdigit()), key=int)) or "none"
            what = "a checkpoint" if step is None else f"the checkpoint of step {step}"
            raise StorageError(f"{what} could not be written under {self.directory} "
                               f"({' '.join(str(error).split())[:300]}); the complete checkpoints (steps {kept}) are "
                               "untouched: free space or make the directory writable, then rerun to resume") from error

    # --- Restoring --------------------------------------------------------------------------------------
    def restore(self, abstract_state: TrainState, step: int | None = None) -> TrainState:
        """Restores `step` (default: the latest) into the shardings of `abstract_state` (a tree of
        ShapeDtypeStruct), checked against its digests."""
        try:
            return self._read(self._manager.latest_step() if step is None else step, abstract_state)[0]
        except CorruptCheckpoint as error:
            raise ConfigError(f"{error} under {self.directory}; pick another of steps "
                              f"{', '.join(map(str, self.steps()))}") from None

    def resume(self, abstract_state: TrainState) -> tuple[TrainState, dict[str, int]] | None:
        """The newest checkpoint that reads back intact, and the run's counters (this restore and its
        fallbacks counted). None when there is no checkpoint.

        Newer checkpoints that failed are moved aside only once an older one has read back: if none
        does, the config rather than the files is the likely cause, and nothing is moved.
        """
        failed = []
        for step in reversed(self.steps()):
            try:
                state, counters = self._read(step, abstract_state)
            except CorruptCheckpoint as error:
                logging.warning("%s; trying the one before", error)
                failed.append(error)
                continue
            for bad in failed:
                self._set_aside(bad.step)
            counters = dict(counters, restores=counters["restores"] + 1,
                            fallbacks=counters["fallbacks"] + len(failed))
            logging.info("resumed from step %d under %s (%s)", step, self.directory,
                         ", ".join(f"{k} {v}" for k, v in counters.items()))
            return state, counters
        if failed:
            raise ConfigError(f"no checkpoint under {self.directory} restores into this config (newest: {failed[0]}); "
                              "run with the config the run was started with, or use a new --workdir")
        return None

    def _read(self, step: int, abstract_state: TrainState) -> tuple[TrainState, dict[str, int]]:
        has_meta = os.path.isdir(os.path.join(self.directory, str(step), "meta"))
        try:
            state, meta = self._read_items(step, abstract_state, has_meta)
        except Exception as error:  # noqa: BLE001 - orbax and tensorstore raise many kinds for unreadable files
            raise CorruptCheckpoint(step, f"cannot be read ({' '.join(str(error).split())[:200]})") from error
        if meta is None:  # written before digests existed
            return state, dict.fromkeys(COUNTERS, 0)
        found = digests(state)
        bad = [path for path, value in meta["digests"].items() if found.get(path) != value]
        if bad:
            raise CorruptCheckpoint(step, f"does not match its digest (first array: state{bad[0]})")
        return state, {k: meta["counters"].get(k, 0) for k in COUNTERS}

    def _read_items(self, step: int, abstract_state: TrainState, has_meta: bool):
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if has_meta:
            items["meta"] = ocp.args.JsonRestore()
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        except ValueError:
            if abstract_state.ema_params is not None or has_meta:
                raise
            # Checkpoints written before TrainState had `ema_params` do not name the field at all.
            fields = {name: getattr(abstract_state, name) for name in ("step", "params", "opt_state", "rng")}
            restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(fields)))
            return TrainState(**restored.state), None
        return restored.state, restored.get("meta") if has_meta else None

    def _set_aside(self, step: int) -> None:
        if jax.process_index() == 0:
            target = os.path.join(self.directory, f"corrupt-{step}")
            suffix = 1
            while os.path.exists(target):
                suffix += 1
                target = os.path.join(self.directory, f"corrupt-{step}-{suffix}")
            os.rename(os.path.join(self.directory, str(step)), target)
        sharding.barrier(f"t2ijax: set aside checkpoint {step}")
        self._manager.reload()

    def close(self) -> None:
        """Waits for pending saves, then releases the manager."""
        self.wait()
        self._manager.close()
