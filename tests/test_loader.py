"""Batches are a function of (seed, step) alone, and hosts split them without overlap."""
import numpy as np

from t2ijax.data.loader import Loader


def _arrays(n=50):
    return {"id": np.arange(n), "x": np.arange(n)[:, None] * np.ones((1, 3))}


def test_same_step_same_batch_any_order():
    a, b = Loader(_arrays(), 8, seed=1), Loader(_arrays(), 8, seed=1)
    first = [a.batch(s)["id"] for s in range(10)]
    later = [b.batch(s)["id"] for s in reversed(range(10))][::-1]
    for x, y in zip(first, later):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.batch(0)["id"], Loader(_arrays(), 8, seed=2).batch(0)["id"])


def test_each_epoch_visits_every_example_once():
    loader = Loader(_arrays(48), 8, seed=0)
    epoch = np.concatenate([loader.batch(s)["id"] for s in range(6)])
    np.testing.assert_array_equal(np.sort(epoch), np.arange(48))
    assert not np.array_equal(epoch, np.concatenate([loader.batch(s)["id"] for s in range(6, 12)]))


def test_processes_split_the_global_batch():
    whole = Loader(_arrays(), 8, seed=3)
    parts = [Loader(_arrays(), 8, seed=3, process_index=p, process_count=2) for p in range(2)]
    for step in range(12):
        joined = np.concatenate([p.batch(step)["id"] for p in parts])
        np.testing.assert_array_equal(joined, whole.batch(step)["id"])
        np.testing.assert_array_equal(whole.batch(step)["x"][:, 0], whole.batch(step)["id"])
