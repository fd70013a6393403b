"""Orbax checkpoints of the training state: atomic, verified on restore, keep-N, resume from the
newest good one.

Orbax writes a step under a temporary name and renames it once complete, so a step directory is
never partial; what a killed save leaves behind is removed at the next start. Old checkpoints are
deleted (keep-N) only after a newer one is complete. Each checkpoint stores, next to the state, a
digest of every array and the run's counters; a checkpoint that cannot be read, lacks its digests
or does not match them is moved to `<directory>/corrupt-<step>` and the one before it is used. A
state holding a NaN or Inf is never written.
"""
import contextlib
import errno
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import serialization

from t2ijax import sharding, storage
from t2ijax.errors import ConfigError, NonFiniteError, StorageError
from t2ijax.training.state import TrainState

COUNTERS = ("skipped_steps", "restores", "fallbacks")


class CorruptCheckpoint(Exception):
    """A checkpoint that cannot be read, or whose arrays differ from the digest saved with them.
    `fits` is False when its arrays' shapes show it was written for another model or optimizer."""

    def __init__(self, step: int, problem: str, fits: bool = True):
        super().__init__(f"checkpoint {step} {problem}")
        self.step = step
        self.fits = fits


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
def _digests(leaves: list[jax.Array]) -> tuple[list[jax.Array], list[jax.Array]]:
    """Each leaf's digest and whether it is all finite: scalars, replicated, so every process reads them."""
    finite = [jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.array(True) for x in leaves]
    return [_digest(x) for x in leaves], finite


def digests(state: TrainState) -> dict[str, int]:
    """One digest per array of `state`, keyed by its path."""
    return _digests_and_nonfinite(state)[0]


def _digests_and_nonfinite(state: TrainState) -> tuple[dict[str, int], list[str]]:
    """The digests, and the paths of the arrays that hold a NaN or Inf."""
    paths, leaves = zip(*jax.tree_util.tree_leaves_with_path(state))
    values, finite = jax.device_get(_digests(list(leaves)))
    names = [jax.tree_util.keystr(p) for p in paths]
    return dict(zip(names, map(int, values))), [name for name, ok in zip(names, finite) if not ok]


# What the disk said, as the OS words it: orbax and tensorstore bury it at varying depths in long messages.
_DISK_REASONS = tuple(os.strerror(code) for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES))


def _disk_reason(error: Exception) -> str:
    """The disk's own reason for `error` when one is named in it, else the error's text cut to one line."""
    text = " ".join(str(error).split())
    return next((reason for reason in _DISK_REASONS if reason in text), text[:300])


def _bucket_reason(error: Exception) -> str:
    """What the object store answered, in one line (gcsfs words a 404 as the bare URL)."""
    text = " ".join(str(error).split())[:300]
    kind = {FileNotFoundError: "not found", PermissionError: "permission denied"}.get(type(error))
    return f"{kind}: {text}" if kind else text


def step_folders(directory: str | os.PathLike) -> list[int]:
    """The steps of the digit-named folders under `directory` (complete checkpoints, or a save in progress),
    sorted; none when `directory` is missing. In a bucket a folder is only its objects, so it may vanish
    between being seen and being listed (another host's write probe deleted): that also means none."""
    path = storage.resolve(directory)
    try:
        return sorted(int(p.name) for p in path.iterdir() if p.name.isdigit()) if path.is_dir() else []
    except FileNotFoundError:
        return []


def _shapes(tree) -> dict[str, tuple[int, ...]]:
    return {jax.tree_util.keystr(p): tuple(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(tree)}


class Checkpointer:
    def __init__(self, directory: str, keep: int = 1, async_save: bool = True, read_only: bool = False):
        """`read_only` for readers beside a live run: they must not remove its saves in progress."""
        path = storage.resolve(directory)  # orbax's array writer rejects relative paths
        if read_only:
            options = ocp.CheckpointManagerOptions(read_only=True, create=False)
        else:
            options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                                   create=True, cleanup_tmp_directories=True)
        self._manager = ocp.CheckpointManager(path, options=options)
        self._path = path
        self._saving: int | None = None  # the step of the save started last, until it is known to be written

    @property
    def directory(self) -> str:
        return os.fspath(self._path)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    # --- Saving ---------------------------------------------------------------------------------------
    def save(self, state: TrainState, counters: dict[str, int]) -> None:
        """Starts saving `state` at its own step (returns before an async write finishes). Raises
        StorageError if the previous save failed, NonFiniteError (writing nothing) if `state` holds a
        NaN or Inf."""
        step = int(state.step)
        self.wait()  # orbax waits for the previous save anyway; here its failure names its own step
        if step == self._manager.latest_step():
            return
        found, nonfinite = _digests_and_nonfinite(state)
        if nonfinite:
            raise NonFiniteError(f"the state of step {step} holds a NaN or Inf (first: state{nonfinite[0]}, "
                                 f"{len(nonfinite)} arrays in all); its checkpoint was not written, the last "
                                 f"one is step {self.latest_step()}")
        meta = {"digests": found, "counters": {k: int(counters[k]) for k in COUNTERS}}
        self._saving = step
        with self._storage_errors():
            self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                             meta=ocp.args.JsonSave(meta)))

    def check_for_errors(self) -> None:
        """Raises StorageError at once if an asynchronous save has failed (cheap; never blocks)."""
        with self._storage_errors():
            self._manager.check_for_errors()

    def wait(self) -> None:
        """Blocks until pending saves are on disk."""
        with self._storage_errors():
            self._manager.wait_until_finished()
        self._saving = None

    @contextlib.contextmanager
    def _storage_errors(self):
        """Turns a failed write into one StorageError naming the step being saved, the directory, its
        free space and the checkpoints that are kept."""
        try:
            yield
        except Exception as error:  # noqa: BLE001 - orbax re-raises its writer threads' errors in many types
            # From the disk, not the manager: a failed save leaves its bookkeeping behind.
            try:
                kept = f" (steps {', '.join(map(str, step_folders(self._path))) or 'none'})"
            except Exception:  # noqa: BLE001 - a bucket gone or unreachable cannot be listed either
                kept = ""
            what = "a checkpoint" if self._saving is None else f"the checkpoint of step {self._saving}"
            if storage.is_url(self.directory):
                where = _bucket_reason(error)
                remedy = "check that the bucket exists and that its permissions and quota allow writing"
            else:
                free = shutil.disk_usage(self.directory).free
                where = f"{free / 2**20:.1f} MiB free; {_disk_reason(error)}"
                remedy = "free space or make the directory writable"
            raise StorageError(f"{what} could not be written under {self.directory} ({where}); the complete "
                               f"checkpoints{kept} are untouched: {remedy}, then rerun to resume") from error

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
            logging.info("resuming from step %d (checkpoint %s; %s)", step, self._path / str(step),
                         ", ".join(f"{k} {v}" for k, v in counters.items()))
            return state, counters
        if any(not error.fits for error in failed):
            raise ConfigError(f"no checkpoint under {self.directory} restores into this config (newest: {failed[0]}); "
                              "run with the config the run was started with, or use a new --workdir")
        if failed:
            raise ConfigError(f"all {len(failed)} checkpoints under {self.directory} are unreadable "
                              f"({'; '.join(map(str, failed))[:400]}); nothing was moved: restore them from a copy, "
                              "or move them aside to start again from step 0")
        return None

    def _read(self, step: int, abstract_state: TrainState) -> tuple[TrainState, dict[str, int]]:
        if not (self._path / str(step) / "meta").is_dir():
            raise CorruptCheckpoint(step, "has no digests (its meta/ folder is missing), so it cannot be verified")
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        except Exception as error:  # noqa: BLE001 - orbax and tensorstore raise many kinds for unreadable files
            raise CorruptCheckpoint(step, f"cannot be read ({' '.join(str(error).split())[:200]})",
                                    fits=self._fits(step, abstract_state)) from error
        state, meta = restored.state, restored.meta
        found = digests(state)
        bad = [path for path, value in meta["digests"].items() if found.get(path) != value]
        if bad or found.keys() != meta["digests"].keys():
            first = bad[0] if bad else sorted(found.keys() ^ meta["digests"].keys())[0]
            raise CorruptCheckpoint(step, f"does not match its digest (first array: state{first})")
        return state, {k: meta["counters"][k] for k in COUNTERS}

    def _fits(self, step: int, abstract_state: TrainState) -> bool:
        """Whether checkpoint `step` holds arrays of the shapes of `abstract_state` (True when its
        metadata cannot be read either: then the files, not the config, are at fault)."""
        try:
            saved = ocp.PyTreeCheckpointer().metadata(self._path / str(step) / "state").item_metadata.tree
        except Exception:  # noqa: BLE001 - as in _read
            return True
        return _shapes(saved) == _shapes(serialization.to_state_dict(abstract_state))

    def _set_aside(self, step: int) -> None:
        """Moves checkpoint `step` to corrupt-<step>. A bucket has no rename: every object is copied, then
        the step deleted. A crash on the way leaves the step whole (it fails verification again at the next
        start and is copied again, under the next free name), or partly deleted (then either uncommitted,
        which orbax removes at its next start, or failing verification again); the checkpoints before it,
        one of which has just read back, are never touched."""
        if jax.process_index() == 0:
            source, target = self._path / str(step), self._path / f"corrupt-{step}"
            suffix = 1
            while target.exists():
                suffix += 1
                target = self._path / f"corrupt-{step}-{suffix}"
            if storage.is_url(self.directory):
                for path in storage.files(source):
                    path.copy(target / path.relative_to(source))
                source.rmtree()
            else:
                source.rename(target)
        sharding.barrier(f"t2ijax: set aside checkpoint {step}")
        self._manager.reload()

    def close(self) -> None:
        """Waits for pending saves, then releases the manager."""
        self.wait()
        self._manager.close()
