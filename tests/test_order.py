"""Batches are a function of (seed, step) alone, and hosts split them without overlap."""
import ml_collections
import numpy as np

from t2ijax.data.captions import field_weights
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


def _groups(sizes=(40, 24, 9)):
    start = np.cumsum((0, *sizes))
    return [{"id": np.arange(a, b)} for a, b in zip(start, start[1:])]


def test_groups_each_batch_from_one_group_in_proportion():
    loader = Loader(_groups(), 8, seed=0)
    counts = np.zeros(3)
    for step in range(3000):
        group, idx = loader.indices(step)
        counts[group] += 1
        ids = loader.batch(step)["id"]
        assert np.array_equal(ids, loader.groups[group]["id"][idx])
    np.testing.assert_allclose(counts / counts.sum(), np.array([40, 24, 9]) / 73, atol=0.03)


def test_groups_any_step_order_and_resume_across_blocks():
    first = Loader(_groups(), 8, seed=5)
    steps = [0, 1, 1023, 1024, 1025, 2500, 4097]
    expected = {s: first.batch(s)["id"] for s in range(max(steps) + 1)}
    for s in reversed(steps):  # a fresh loader asked for a late step first, as after a resume
        np.testing.assert_array_equal(Loader(_groups(), 8, seed=5).batch(s)["id"], expected[s])


def test_groups_walk_epochs_and_split_over_processes():
    loader = Loader(_groups((16, 16)), 8, seed=2)
    seen = {0: [], 1: []}
    for step in range(200):
        group, idx = loader.indices(step)
        seen[group].append(idx)
    for group in (0, 1):  # every two consecutive batches of a group cover its 16 examples once
        first_epoch = np.concatenate(seen[group][:2])
        np.testing.assert_array_equal(np.sort(first_epoch), np.arange(16))
    parts = [Loader(_groups(), 8, seed=3, process_index=p, process_count=2) for p in range(2)]
    whole = Loader(_groups(), 8, seed=3)
    for step in range(50):
        np.testing.assert_array_equal(np.concatenate([p.batch(step)["id"] for p in parts]), whole.batch(step)["id"])


def test_one_group_is_the_plain_loader():
    arrays = _arrays()
    np.testing.assert_array_equal(Loader([arrays], 8, seed=4).batch(7)["id"], Loader(arrays, 8, seed=4).batch(7)["id"])


def _viewed(n=24, views=3, fields=2, weights=(0.8, 0.2)):
    """A group with `views` views and `fields` caption fields: caption row = 1000 * view + 100 * field + example
    (id = example < 100), so a batch says which view and field were drawn."""
    example, view, field = np.meshgrid(np.arange(n), np.arange(views), np.arange(fields), indexing="ij")
    return {"id": np.arange(n), "image": np.arange(n)[:, None] * 10 + np.arange(views),
            "caption": 1000 * view + 100 * field + example,
            "caption_weights": np.tile(np.asarray(weights, np.float32), (n, 1))}


def test_views_and_captions_are_a_function_of_seed_and_step():
    arrays = _viewed()
    first = Loader(arrays, 8, seed=7)
    expected = {s: first.batch(s) for s in range(40)}
    resumed = Loader(arrays, 8, seed=7)  # asked for late steps first, as after a resume at step 25
    for s in [*range(25, 40), *range(25)]:
        for key in ("id", "image", "caption"):
            np.testing.assert_array_equal(resumed.batch(s)[key], expected[s][key])
    parts = [Loader(arrays, 8, seed=7, process_index=p, process_count=2) for p in range(2)]
    for s in range(40):
        np.testing.assert_array_equal(np.concatenate([p.batch(s)["caption"] for p in parts]), expected[s]["caption"])
    batch = expected[0]
    np.testing.assert_array_equal(batch["image"] // 10, batch["id"])  # the image and caption of one drawn view
    np.testing.assert_array_equal(batch["image"] % 10, batch["caption"] // 1000)
    np.testing.assert_array_equal(batch["caption"] % 100, batch["id"])
    assert "caption_weights" not in batch
    # Example 0's view is drawn anew each epoch (3 batches): over 100 epochs it gets every view.
    views_of_0 = {int(c) // 1000 for s in range(300) for i, c in zip(first.batch(s)["id"], first.batch(s)["caption"])
                  if i == 0}
    assert views_of_0 == {0, 1, 2}


def test_caption_fields_drawn_with_their_weights():
    loader = Loader(_viewed(n=40, views=1, weights=(0.8, 0.2)), 8, seed=0)
    fields = np.concatenate([loader.batch(s)["caption"] // 100 % 10 for s in range(1000)])
    assert abs(np.mean(fields == 0) - 0.8) < 0.02, np.mean(fields == 0)
    # Examples 0-9 lack their first field's caption, 10-19 both: never an empty caption while one is there.
    texts = np.array([["", "short"]] * 10 + [["", ""]] * 10 + [["long", "short"]] * 20, object)
    arrays = _viewed(n=40, views=1)
    arrays["caption_weights"] = field_weights(ml_collections.ConfigDict({"captions": (("long", 0.8), ("short", 0.2))}),
                                              texts)
    loader = Loader(arrays, 8, seed=0)
    drawn = [(loader.batch(s)["id"], loader.batch(s)["caption"] // 100 % 10) for s in range(500)]
    ids, fields = (np.concatenate(x) for x in zip(*drawn))
    assert (fields[ids < 10] == 1).all() and 0.75 < np.mean(fields[ids >= 20] == 0) < 0.85
    assert (texts[ids, fields] != "").sum() == (ids < 10).sum() + (ids >= 20).sum()  # all-empty: the empty caption
