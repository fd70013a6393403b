"""Orbax checkpoints of the training state: async saves, keep-N, resume from the latest."""
import os

import orbax.checkpoint as ocp

from t2ijax.train_state import TrainState


class Checkpointer:
    def __init__(self, directory: str, keep: int, async_save: bool = True):
        directory = os.path.abspath(directory)  # orbax's array writer rejects relative paths
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                               create=True)
        self._manager = ocp.CheckpointManager(directory, options=options)
        self.directory = directory

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, state: TrainState) -> None:
        """Starts saving `state` at its own step (returns before an async write finishes)."""
        step = int(state.step)
        if step != self._manager.latest_step():
            self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))

    def restore(self, abstract_state: TrainState, step: int | None = None) -> TrainState:
        """Restores into the shardings of `abstract_state` (a tree of ShapeDtypeStruct)."""
        step = self._manager.latest_step() if step is None else step
        try:
            return self._restore(step, abstract_state)
        except ValueError as mismatch:
            if abstract_state.ema_params is not None:
                raise
            # Checkpoints written before TrainState had `ema_params` do not name the field at all.
            fields = {name: getattr(abstract_state, name) for name in ("step", "params", "opt_state", "rng")}
            try:
                return TrainState(**self._restore(step, fields))
            except ValueError:
                raise mismatch from None

    def _restore(self, step: int, target):
        return self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))).state

    def close(self) -> None:
        """Waits for pending saves, then releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()
