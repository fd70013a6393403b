"""Deterministic batches: the examples of step k are a function of (seed, k) alone.

So a run resumed at step k sees exactly the batches an uninterrupted run would have seen.
Each process gathers only its own contiguous share of the global batch.
"""
import numpy as np


class Loader:
    def __init__(self, arrays: dict[str, np.ndarray], global_batch_size: int, seed: int,
                 process_index: int = 0, process_count: int = 1):
        sizes = {len(v) for v in arrays.values()}
        if len(sizes) != 1:
            raise ValueError(f"arrays have different lengths: { {k: len(v) for k, v in arrays.items()} }")
        if global_batch_size % process_count:
            raise ValueError(f"global batch {global_batch_size} is not divisible by {process_count} processes")
        self.arrays = arrays
        self.size = sizes.pop()
        self.global_batch_size = global_batch_size
        self.seed = seed
        local = global_batch_size // process_count
        self._local_slice = slice(process_index * local, (process_index + 1) * local)
        self._perms: dict[int, np.ndarray] = {}

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
            self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.size)
        return self._perms[epoch]

    def indices(self, step: int) -> np.ndarray:
        """Dataset indices of this process's share of the global batch at `step`."""
        positions = step * self.global_batch_size + np.arange(self.global_batch_size)[self._local_slice]
        epochs, offsets = np.divmod(positions, self.size)
        return np.array([self._permutation(e)[o] for e, o in zip(epochs, offsets)])

    def batch(self, step: int) -> dict[str, np.ndarray]:
        idx = self.indices(step)
        return {k: v[idx] for k, v in self.arrays.items()}
