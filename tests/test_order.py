"""Batches are a function of (seed, step) alone, and processes split them without overlap
(t2ijax/data/order.py: the bucket, the examples, each one's view and caption field)."""
import ml_collections
import numpy as np

from t2ijax.data.captions import field_weights
from t2ijax.data.order import BatchOrder, choose


def _ids(order: BatchOrder, step: int, sizes=(50,)) -> np.ndarray:
    """The examples of `step`, numbered across groups (group g's examples after groups 0..g-1's)."""
    group, indices, _ = order.draw(step)
    return sum(sizes[:group]) + indices


def test_same_step_same_batch_any_order():
    a, b = BatchOrder([50], 8, seed=1), BatchOrder([50], 8, seed=1)
    first = [a.draw(s) for s in range(10)]
    later = [b.draw(s) for s in reversed(range(10))][::-1]
    for (group, x, draws), (other, y, other_draws) in zip(first, later):
        assert group == other == 0
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(draws, other_draws)
    assert not np.array_equal(_ids(a, 0), _ids(BatchOrder([50], 8, seed=2), 0))


def test_each_epoch_visits_every_example_once():
    order = BatchOrder([48], 8, seed=0)
    epoch = np.concatenate([_ids(order, s) for s in range(6)])
    np.testing.assert_array_equal(np.sort(epoch), np.arange(48))
    assert not np.array_equal(epoch, np.concatenate([_ids(order, s) for s in range(6, 12)]))


def test_one_group_keeps_the_plain_seed():
    """A run without buckets draws the batches it always has: epoch e is permutation(rng([seed, e])), and the
    view and caption draws rng([seed, e, 2**21]) per example."""
    order = BatchOrder([20], 8, seed=4)
    epochs = [np.random.default_rng([4, e]).permutation(20) for e in (2, 3)]
    draws = [np.random.default_rng([4, e, 1 << 21]).random((20, 2)) for e in (2, 3)]
    _, indices, drawn = order.draw(7)  # positions 56..63: the last 4 of epoch 2, the first 4 of epoch 3
    np.testing.assert_array_equal(indices, [*epochs[0][16:], *epochs[1][:4]])
    np.testing.assert_array_equal(drawn, [*draws[0][epochs[0][16:]], *draws[1][epochs[1][:4]]])


def _split_equals_whole(sizes, steps, seed=3):
    whole = BatchOrder(list(sizes), 8, seed=seed)
    parts = [BatchOrder(list(sizes), 8, seed=seed, process_index=p, process_count=2) for p in range(2)]
    for step in steps:
        group, indices, draws = whole.draw(step)
        shares = [p.draw(step) for p in parts]
        assert [g for g, _, _ in shares] == [group, group]
        assert all(len(i) == 4 for _, i, _ in shares)
        np.testing.assert_array_equal(np.concatenate([i for _, i, _ in shares]), indices)
        np.testing.assert_array_equal(np.concatenate([d for _, _, d in shares]), draws)


def test_processes_split_the_global_batch():
    _split_equals_whole((50,), range(12))


def test_groups_each_batch_from_one_group_in_proportion():
    order = BatchOrder([40, 24, 9], 8, seed=0)
    counts = np.zeros(3)
    for step in range(3000):
        group, indices, _ = order.draw(step)
        counts[group] += 1
        assert indices.max() < (40, 24, 9)[group]
    np.testing.assert_allclose(counts / counts.sum(), np.array([40, 24, 9]) / 73, atol=0.03)


def test_groups_any_step_order_and_resume_across_blocks():
    sizes = (40, 24, 9)
    first = BatchOrder(list(sizes), 8, seed=5)
    steps = [0, 1, 1023, 1024, 1025, 2500, 4097]
    expected = {s: _ids(first, s, sizes) for s in range(max(steps) + 1)}
    for s in reversed(steps):  # a fresh order asked for a late step first, as after a resume
        np.testing.assert_array_equal(_ids(BatchOrder(list(sizes), 8, seed=5), s, sizes), expected[s])


def test_groups_walk_epochs_and_split_over_processes():
    order = BatchOrder([16, 16], 8, seed=2)
    seen = {0: [], 1: []}
    for step in range(200):
        group, indices, _ = order.draw(step)
        seen[group].append(indices)
    for group in (0, 1):  # every two consecutive batches of a group cover its 16 examples once
        first_epoch = np.concatenate(seen[group][:2])
        np.testing.assert_array_equal(np.sort(first_epoch), np.arange(16))
    _split_equals_whole((40, 24, 9), range(50))


def _drawn(order: BatchOrder, step: int, num_views: int, weights: np.ndarray):
    """(examples, views, fields) of `step`, the examples having caption field weights `weights` [N, F]."""
    _, indices, draws = order.draw(step)
    return (indices, *choose(num_views, weights[indices], draws))


def test_views_and_captions_are_a_function_of_seed_and_step():
    weights = np.tile(np.asarray([0.8, 0.2], np.float32), (24, 1))
    first = BatchOrder([24], 8, seed=7)
    expected = {s: _drawn(first, s, 3, weights) for s in range(40)}
    resumed = BatchOrder([24], 8, seed=7)  # asked for late steps first, as after a resume at step 25
    for s in [*range(25, 40), *range(25)]:
        for found, want in zip(_drawn(resumed, s, 3, weights), expected[s]):
            np.testing.assert_array_equal(found, want)
    _split_equals_whole((24,), range(40), seed=7)  # the draws too
    # Example 0's view is drawn anew each epoch (3 batches): over 100 epochs it gets every view.
    views_of_0 = {int(v) for s in range(300) for i, v, _ in zip(*_drawn(first, s, 3, weights)) if i == 0}
    assert views_of_0 == {0, 1, 2}


def test_choose_maps_draws_to_views_and_weighted_fields():
    draws = np.array([[0.0, 0.0], [0.34, 0.79], [0.67, 0.81], [0.999, 0.999]])
    view, field = choose(3, np.tile([[0.8, 0.2]], (4, 1)), draws)
    np.testing.assert_array_equal(view, [0, 1, 2, 2])
    np.testing.assert_array_equal(field, [0, 0, 1, 1])
    _, field = choose(1, np.array([[0.0, 1.0]] * 4), draws)  # a zero weight is never drawn
    np.testing.assert_array_equal(field, [1, 1, 1, 1])


def test_caption_fields_drawn_with_their_weights():
    order = BatchOrder([40], 8, seed=0)
    weights = np.tile(np.asarray([0.8, 0.2], np.float32), (40, 1))
    fields = np.concatenate([_drawn(order, s, 1, weights)[2] for s in range(1000)])
    assert abs(np.mean(fields == 0) - 0.8) < 0.02, np.mean(fields == 0)
    # Examples 0-9 lack their first field's caption, 10-19 both: never an empty caption while one is there.
    texts = np.array([["", "short"]] * 10 + [["", ""]] * 10 + [["long", "short"]] * 20, object)
    weights = field_weights(ml_collections.ConfigDict({"captions": (("long", 0.8), ("short", 0.2))}), texts)
    drawn = [_drawn(order, s, 1, weights) for s in range(500)]
    ids, fields = (np.concatenate(x) for x in list(zip(*drawn))[::2])
    assert (fields[ids < 10] == 1).all() and 0.75 < np.mean(fields[ids >= 20] == 0) < 0.85
    assert (texts[ids, fields] != "").sum() == (ids < 10).sum() + (ids >= 20).sum()  # all-empty: the empty caption
