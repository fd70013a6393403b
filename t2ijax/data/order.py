"""Which examples make the batch of step k: a function of (seed, k) alone.

So a run resumed at step k sees exactly the batches an uninterrupted run would have seen, whatever
the number of processes; each process takes only its own contiguous share of the global batch.

The examples come in groups of one image shape each (aspect-ratio buckets; one group without them):
every global batch is drawn from one group, chosen at random in proportion to the groups' sizes, and
each group is walked through in its own shuffled epochs. Every example of a batch also gets two uniform
draws, a function of (seed, group, epoch, example index) like the order itself: which augmentation view
it shows (uniformly) and which caption field it is read with (with the example's weights), `choose`.
"""
import numpy as np

_BLOCK = 1024  # steps whose groups are drawn together
_DRAWS = 1 << 21  # seeds an epoch's view and caption draws apart from its permutation


class _Stream:
    """One group's examples in shuffled epochs; its n-th batch is a function of (seed, n)."""

    def __init__(self, size: int, global_batch_size: int, seed: tuple[int, ...], local_slice: slice):
        self.size, self.global_batch_size, self.seed = size, global_batch_size, seed
        self._local_slice = local_slice
        self._epochs: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """The epoch's order of the examples, and two uniform draws per example ([N, 2]: view, caption)."""
        if epoch not in self._epochs:
            self._epochs = {e: p for e, p in self._epochs.items() if e >= epoch - 1}
            self._epochs[epoch] = (np.random.default_rng([*self.seed, epoch]).permutation(self.size),
                                   np.random.default_rng([*self.seed, epoch, _DRAWS]).random((self.size, 2)))
        return self._epochs[epoch]

    def indices(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """This process's examples of the n-th batch, and their draws [B, 2]."""
        positions = n * self.global_batch_size + np.arange(self.global_batch_size)[self._local_slice]
        epochs, offsets = np.divmod(positions, self.size)
        indices = np.array([self._epoch(e)[0][o] for e, o in zip(epochs, offsets)])
        draws = np.array([self._epoch(e)[1][i] for e, i in zip(epochs, indices)]).reshape(-1, 2)
        return indices, draws


def choose(num_views: int, caption_weights: np.ndarray, draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The view [B] and caption field [B] that `draws` [B, 2] pick, given the examples' field weights [B, F]."""
    view = np.minimum((draws[:, 0] * num_views).astype(np.int64), num_views - 1)
    cumulative = np.cumsum(caption_weights, axis=1)
    field = np.minimum((cumulative <= draws[:, 1:] * cumulative[:, -1:]).sum(axis=1), cumulative.shape[1] - 1)
    return view, field


class BatchOrder:
    """The batches of groups of `sizes` examples each (one per image shape)."""

    def __init__(self, sizes: list[int], global_batch_size: int, seed: int | tuple[int, ...],
                 process_index: int = 0, process_count: int = 1):
        if not sizes or min(sizes) < 1:
            raise ValueError(f"every group needs examples: {sizes}")
        self.sizes = list(sizes)
        if global_batch_size % process_count:
            raise ValueError(f"global batch {global_batch_size} is not divisible by {process_count} processes")
        self.global_batch_size, self.seed = global_batch_size, tuple(np.atleast_1d(seed).tolist())
        self.process_count = process_count
        local = global_batch_size // process_count
        local_slice = slice(process_index * local, (process_index + 1) * local)
        # One group keeps the plain seed: the batches of a run without buckets do not depend on this code.
        seeds = [self.seed] if len(sizes) == 1 else [(*self.seed, g) for g in range(len(sizes))]
        self._streams = [_Stream(n, global_batch_size, s, local_slice) for n, s in zip(sizes, seeds)]
        self._weights = np.asarray(sizes, np.float64) / sum(sizes)
        self._block_starts = [np.zeros(len(sizes), np.int64)]  # per block: draws of each group before it
        self._block_cache: dict[int, np.ndarray] = {}

    def _block(self, block: int) -> np.ndarray:
        if block not in self._block_cache:
            rng = np.random.default_rng([*self.seed, 1 << 20, block])
            self._block_cache = {block: rng.choice(len(self._streams), _BLOCK, p=self._weights)}
        return self._block_cache[block]

    def position(self, step: int) -> tuple[int, int]:
        """(group, n): step `step` takes the n-th batch of that group."""
        if len(self._streams) == 1:
            return 0, step
        block, offset = divmod(step, _BLOCK)
        while len(self._block_starts) <= block:
            b = len(self._block_starts) - 1
            self._block_starts.append(self._block_starts[b] + np.bincount(self._block(b), minlength=len(self._streams)))
        draws = self._block(block)
        group = int(draws[offset])
        return group, int(self._block_starts[block][group] + np.count_nonzero(draws[:offset] == group))

    def draw(self, step: int) -> tuple[int, np.ndarray, np.ndarray]:
        """The group of `step`, this process's examples of it [B] and their draws [B, 2] (view, caption)."""
        group, n = self.position(step)
        return (group, *self._streams[group].indices(n))
