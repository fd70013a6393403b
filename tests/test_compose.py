"""The compose dataset and its detector: scenes per category, held-out splits, captions, rendering, the TFDS
builder; the detector exact on every category of both splits, and able to fail."""

import collections
import functools
import itertools
import re

import numpy as np
import pytest

from conftest import assert_examples_repeat, tiny_config
from t2ijax import defaults
from t2ijax.data import compose, sources
from t2ijax.errors import ConfigError
from t2ijax.metrics import compose_detect

NUM = 240  # scenes per split: 40 per category
FIELDS = (*compose.SCENE_FIELDS, *compose.OBJECT_FIELDS)


@functools.cache
def _scenes(split, num=NUM):
    return tuple(compose.sample_scene(split, i) for i in range(num))


def _batch(split, height, width=None, num=NUM):
    examples = [compose.example(split, i, height, width) for i in range(num)]
    return np.stack([e["image"] for e in examples]), {key: np.stack([e[key] for e in examples]) for key in FIELDS}


def _category(scene):
    return compose.CATEGORIES[scene.category]


def test_same_seed_gives_identical_examples():
    assert_examples_repeat(compose.example, compose.SPLITS, 24)
    assert list(_scenes("train")[:24]) != [compose.sample_scene("train", i, seed=1) for i in range(24)]


def test_each_category_holds_what_its_caption_names():
    scenes = _scenes("train") + _scenes("validation")
    assert set(collections.Counter(s.category for s in scenes).values()) == {2 * NUM // len(compose.CATEGORIES)}
    for scene in scenes:
        cells = [o.cell for o in scene.objects]
        assert len(set(cells)) == len(cells) and set(cells) <= set(range(9))
        bindings = [(o.shape, o.colour) for o in scene.objects]
        assert (scene.relation >= 0) == (_category(scene) == "position")
        if _category(scene) in ("single_object", "colours"):
            assert len(bindings) == 1
        elif _category(scene) == "two_objects":
            assert len(bindings) == 2 and bindings[0][0] != bindings[1][0]
        elif _category(scene) == "counting":
            count = bindings.count(bindings[0])
            assert count in compose.COUNTS and bindings[:count] == [bindings[0]] * count and len(bindings) <= 4
            for shape, colour in bindings[count:]:  # distractors share exactly one attribute with the counted
                assert (shape == bindings[0][0]) != (colour == bindings[0][1])
        elif _category(scene) == "position":
            assert len(bindings) == 2 and bindings[0] != bindings[1]
            assert compose.relation_holds(scene.relation, *cells)
        else:
            (shape_a, colour_a), (shape_b, colour_b) = bindings[:2]
            assert shape_a != shape_b and colour_a != colour_b and len(bindings) in (2, 3)
            assert bindings[2:] in ([], [(shape_a, colour_b)], [(shape_b, colour_a)])
    assert {len(s.objects) for s in scenes} == {1, 2, 3, 4}
    assert {s.relation for s in scenes} == {-1, 0, 1, 2, 3}
    pairs = [pair for s in scenes for pair in itertools.combinations(s.objects, 2)]
    assert any(a.shape == b.shape and a.colour != b.colour for a, b in pairs)
    assert any(a.colour == b.colour and a.shape != b.shape for a, b in pairs)


def test_held_out_combinations_leave_every_value_in_training():
    held = compose.held_out()
    shapes, colours = range(len(compose.SHAPES)), range(len(compose.COLOURS))
    for s in shapes:
        assert sum((s, c) in held.colour_shapes for c in colours) == 1
        for axis in (0, 1):
            assert sum((s, axis, t) in held.relations for t in shapes) == 1
            assert sum((t, axis, s) in held.relations for t in shapes) == 1
            assert (s, axis, s) not in held.relations
        assert sum((n, s) in held.counts for n in compose.COUNTS) <= 1
    for c in colours:
        assert sum((s, c) in held.colour_shapes for s in shapes) <= 1
    for n in compose.COUNTS:
        assert sum((n, s) in held.counts for s in shapes) == 1
    assert len(held.relations) == 2 * len(shapes) and {axis for _, axis, _ in held.relations} == {0, 1}
    horizontal = {(s, t) for s, axis, t in held.relations if axis == 0}
    assert horizontal == {(t, s) for s, t in horizontal}  # a mirrored training image shows none of them


def _facts(a, b):
    """(shape, axis, shape) facts between two objects, recomputed from their rows and columns."""
    (row_a, column_a), (row_b, column_b) = divmod(a.cell, 3), divmod(b.cell, 3)
    out = set()
    if column_a != column_b:
        left, right = (a, b) if column_a < column_b else (b, a)
        out.add((left.shape, 0, right.shape))
    if row_a != row_b:
        upper, lower = (a, b) if row_a < row_b else (b, a)
        out.add((upper.shape, 1, lower.shape))
    return out


def _held_out_shown(scene):
    """The held-out combinations in a scene, as ("colour_shape" | "count" | "relation", ...)."""
    held = compose.held_out()
    objects = scene.objects
    shown = {("colour_shape", o.shape, o.colour) for o in objects if (o.shape, o.colour) in held.colour_shapes}
    for shape in {o.shape for o in objects}:
        for colour in (None, *{o.colour for o in objects}):
            n = sum(o.shape == shape and colour in (None, o.colour) for o in objects)
            if (n, shape) in held.counts:
                shown.add(("count", n, shape))
    if scene.relation >= 0:
        shown |= {("relation", *fact) for fact in _facts(*objects) if fact in held.relations}
    return shown


def _tested(scene):
    """The held-out combination a validation scene's category checks."""
    first, held = scene.objects[0], compose.held_out()
    if _category(scene) == "counting":
        count = sum((o.shape, o.colour) == (first.shape, first.colour) for o in scene.objects)
        return {("count", count, first.shape)} & {("count", *c) for c in held.counts}
    if _category(scene) == "position":
        a, b = scene.objects
        stated = [(a.shape, 0, b.shape), (b.shape, 0, a.shape), (a.shape, 1, b.shape), (b.shape, 1, a.shape)]
        return {("relation", *stated[scene.relation])} & {("relation", *f) for f in held.relations}
    named = scene.objects[:1] if _category(scene) in ("single_object", "colours") else scene.objects[:2]
    return {("colour_shape", o.shape, o.colour) for o in named if (o.shape, o.colour) in held.colour_shapes}


def test_held_out_combinations_are_absent_from_training_and_tested_by_every_validation_scene():
    assert not any(_held_out_shown(compose.sample_scene("train", i)) for i in range(1800))
    validation = [compose.sample_scene("validation", i) for i in range(600)]
    for scene in validation:
        assert _tested(scene) and _tested(scene) <= _held_out_shown(scene), scene
    held = compose.held_out()
    every = ({("colour_shape", *p) for p in held.colour_shapes} | {("relation", *f) for f in held.relations}
             | {("count", *c) for c in held.counts})
    assert set().union(*map(_tested, validation)) == every


@pytest.mark.parametrize("size", [(32, 32), (64, 64), (40, 40), (32, 64)])
def test_objects_fill_their_cells_centred_and_never_reach_the_border(size):
    height, width = size
    bounds = [compose.cell_bounds(cell, height, width) for cell in range(9)]
    tiles = np.zeros((height, width), int)
    for top, bottom, left, right in bounds:
        tiles[top:bottom, left:right] += 1
    assert (tiles == 1).all()
    for scene in _scenes("train")[:120] + _scenes("validation")[:60]:
        image = compose.render(scene, height, width)
        covered = np.zeros((height, width), bool)
        for obj in scene.objects:
            mask = compose.object_mask(obj, height, width)
            rows, columns = np.nonzero(mask)
            top, bottom, left, right = bounds[obj.cell]
            assert top <= rows.min() and rows.max() < bottom and left <= columns.min() and columns.max() < right
            assert rows.min() > 0 and columns.min() > 0 and rows.max() < height - 1 and columns.max() < width - 1
            box_centre = ((rows.min() + rows.max() + 1) / 2, (columns.min() + columns.max() + 1) / 2)
            assert box_centre == compose.cell_centre(obj.cell, height, width)
            half = compose.half_extent(obj.size, height, width)
            assert np.ptp(rows) + 1 == 2 * np.ceil(half) - 1  # the pixel centres strictly inside
            assert (image[mask] == compose.COLOUR_RGB[obj.colour]).all()
            covered |= mask
        assert (image[~covered] == compose.BACKGROUND_RGB[scene.background]).all()


def test_palette_is_well_separated():
    def distances(a, b):
        return np.linalg.norm(a.astype(float)[:, None] - b.astype(float)[None], axis=-1)

    between = distances(compose.COLOUR_RGB, compose.COLOUR_RGB)[np.triu_indices(len(compose.COLOURS), 1)]
    assert between.min() >= 108 and distances(compose.COLOUR_RGB, compose.BACKGROUND_RGB).min() >= 135


def _plural(shape):
    return shape + ("es" if shape.endswith("s") else "s")


def test_captions_state_what_the_attributes_say():
    words = compose.NUMBER_WORDS
    for i, scene in enumerate(_scenes("train") + _scenes("validation")):
        long, short = compose.caption_long(scene, phrasing=i).lower(), compose.caption_short(scene)
        assert f"{compose.BACKGROUNDS[scene.background]} background" in long
        assert not re.search(r"\ba [aeiou]", long + " " + short)  # "an orange"
        for members in compose.groups(scene.objects):
            colour, shape = compose.COLOURS[members[0].colour], compose.SHAPES[members[0].shape]
            for obj in members:
                size, place = compose.SIZES[obj.size], compose.CELL_PHRASES[obj.cell]
                assert (f"{size} {colour} {shape} {place}" if len(members) == 1 else f"{size} {place}") in long
            if len(members) > 1:
                assert f"{words[len(members)]} {colour} {_plural(shape)}" in long
        first = scene.objects[0]
        colour, shape = compose.COLOURS[first.colour], compose.SHAPES[first.shape]
        if _category(scene) == "single_object":
            assert short == f"a {shape}"
        elif _category(scene) == "two_objects":
            assert short == " and ".join(f"a {compose.SHAPES[o.shape]}" for o in scene.objects)
        elif _category(scene) == "counting":
            count = sum((o.shape, o.colour) == (first.shape, first.colour) for o in scene.objects)
            assert short.startswith(f"{words[count]} {colour} {_plural(shape)}")
        elif _category(scene) == "position":
            other = scene.objects[1]
            relation = compose.RELATIONS[scene.relation]
            assert re.fullmatch(rf"an? {colour} {shape} {relation} an? {compose.COLOURS[other.colour]} "
                                rf"{compose.SHAPES[other.shape]}", short)
            assert f", {relation} a" in long
        elif _category(scene) == "colours":
            assert re.fullmatch(rf"an? {colour} {shape}", short)
        else:  # colour_attribution: every object by colour and shape
            for obj in scene.objects:
                assert f"{compose.COLOURS[obj.colour]} {compose.SHAPES[obj.shape]}" in short
            assert short.count(" and ") == 1 and short.count(",") == len(scene.objects) - 2


def test_attributes_are_padded_and_read_back():
    for scene in _scenes("validation")[:60]:
        attrs = compose.attributes(scene)
        assert set(attrs) == set(FIELDS) and all(v.dtype == np.int32 for v in attrs.values())
        for field in compose.OBJECT_FIELDS:
            assert attrs[field].shape == (compose.MAX_OBJECTS,)
            assert (attrs[field][len(scene.objects):] == -1).all()
        assert compose.scene_of({k: np.asarray(v)[None] for k, v in attrs.items()}, 0) == scene


@pytest.mark.parametrize("resolution", [32, 64])
@pytest.mark.parametrize("split", compose.SPLITS)
def test_detector_is_exact_on_dataset_images(split, resolution):
    result = compose_detect.score(*_batch(split, resolution))
    accuracies = {*compose.CATEGORIES, "overall", "scene", "cell", "colour", "shape", "size", "object"}
    assert set(result) == accuracies | {f"{name}_se" for name in accuracies}
    assert result == {name: float(name in accuracies) for name in result}  # every accuracy 1, every error 0


@pytest.mark.parametrize("size", [(32, 64), (64, 32), (48, 48)])
def test_detections_are_the_scenes_objects(size):
    for scene in _scenes("validation")[:60]:
        found = compose_detect.detect(compose.render(scene, *size))
        assert found == sorted(scene.objects, key=lambda o: o.cell)


def test_exact_under_mild_noise():
    images, attrs = _batch("validation", 32)
    noisy = images + np.random.default_rng(0).normal(0.0, 8.0, images.shape)
    result = compose_detect.score(np.clip(np.round(noisy), 0, 255).astype(np.uint8), attrs)
    assert _accuracies(result) == dict.fromkeys(_accuracies(result), 1.0)


def test_wrong_prompts_score_zero():
    images, attrs = _batch("validation", 32)
    position = attrs["category"] == compose.CATEGORIES.index("position")
    swapped = compose_detect.score(images, {**attrs, "relation": np.where(position, attrs["relation"] ^ 1, -1)})
    assert swapped["position"] == 0.0 and swapped["scene"] == 1.0
    assert all(value == 1.0 for key, value in _accuracies(swapped).items() if key not in ("position", "overall"))
    assert swapped["overall"] == pytest.approx(5 / 6)

    counting = attrs["category"] == compose.CATEGORIES.index("counting")
    colour = attrs["colour"].copy()
    colour[counting, 1] = (colour[counting, 1] + 1) % len(compose.COLOURS)  # one counted object fewer
    miscounted = compose_detect.score(images, {**attrs, "colour": colour})
    assert miscounted["counting"] == 0.0 and miscounted["single_object"] == 1.0

    shape = np.where(attrs["shape"] >= 0, (attrs["shape"] + 1) % len(compose.SHAPES), -1)
    other_shapes = compose_detect.score(images, {**attrs, "shape": shape})
    for category in ("single_object", "two_objects", "colours", "position", "colour_attribution"):
        assert other_shapes[category] == 0.0, category
    assert other_shapes["scene"] == other_shapes["shape"] == other_shapes["object"] == 0.0
    assert other_shapes["colour"] == other_shapes["cell"] == 1.0


def test_other_scenes_prompts_and_blank_images_score_low():
    images, attrs = _batch("validation", 32)
    shuffled = compose_detect.score(images[np.random.default_rng(0).permutation(len(images))], attrs)
    assert shuffled["overall"] < 0.25 and shuffled["scene"] < 0.05, shuffled
    blank = np.ascontiguousarray(np.broadcast_to(
        compose.BACKGROUND_RGB[attrs["background"]][:, None, None, :], images.shape))
    assert compose_detect.detect(blank[0]) == []
    result = compose_detect.score(blank, attrs)
    assert result == dict.fromkeys(result, 0.0)  # accuracies, and so their errors


def test_standard_errors_are_binomial_over_each_categorys_prompts():
    images, attrs = _batch("validation", 32)
    counting = attrs["category"] == compose.CATEGORIES.index("counting")
    colour = attrs["colour"].copy()
    wrong = np.flatnonzero(counting)[:2]  # two counting prompts that no longer match their images
    colour[wrong, 1] = (colour[wrong, 1] + 1) % len(compose.COLOURS)
    result = compose_detect.score(images, {**attrs, "colour": colour})
    n = int(counting.sum())
    p = (n - 2) / n
    assert result["counting"] == pytest.approx(p)
    assert result["counting_se"] == pytest.approx(np.sqrt(p * (1 - p) / n))
    assert result["overall_se"] == pytest.approx(result["counting_se"] / len(compose.CATEGORIES))


def _accuracies(result: dict) -> dict:
    return {name: value for name, value in result.items() if not name.endswith("_se")}


def test_images_under_32_px_are_refused(tmp_path):
    from t2ijax.data import compose_tfds

    with pytest.raises(ConfigError, match="at least 32 px a side, not 24x24"):
        compose_tfds.build(str(tmp_path), 24)
    with pytest.raises(ConfigError, match="at least 32 px a side, not 32x28"):
        compose_detect.detect(np.zeros((32, 28, 3), np.uint8))


@pytest.fixture(scope="module")
def compose_dir(tmp_path_factory) -> str:
    """Where the tests that build compose through TFDS share one build (24 train, 12 validation examples)."""
    return str(tmp_path_factory.mktemp("compose"))


def test_tfds_build_read_through_the_dataset_registry(compose_dir):
    cfg = defaults.get_config().data
    cfg.name, cfg.data_dir, cfg.num_train, cfg.num_validation = "compose", compose_dir, 24, 12
    for split, num in (("train", 24), ("validation", 12)):
        data = sources.load_split(cfg, split)
        assert data["image"].shape == (num, 32, 32, 3) and data["image"].dtype == np.uint8
        for key in compose.OBJECT_FIELDS:
            assert data[key].shape == (num, compose.MAX_OBJECTS) and data[key].dtype == np.int32
        # The long caption fixes the whole scene, so it keys the stored examples.
        expected = {e["caption_long"]: e for e in (compose.example(split, i, 32) for i in range(num))}
        assert sorted(data["caption_long"]) == sorted(expected)
        for i, caption in enumerate(data["caption_long"]):
            assert data["caption_short"][i] == expected[caption]["caption_short"]
            for key in ("image", *FIELDS):
                np.testing.assert_array_equal(data[key][i], expected[caption][key])
        assert compose_detect.score(data["image"], data)["overall"] == 1.0


def test_the_evaluator_scores_compose_records_per_category(compose_dir):
    """Records keep each held-out scene's attributes, and the evaluator of a compose run scores its images per
    GenEval category with standard errors: the held-out images themselves score 1 everywhere, images of the
    other scenes far less."""
    from t2ijax.data.run_data import open_run_data
    from t2ijax.metrics.evaluation import Evaluator

    config = tiny_config(compose_dir)
    config.data.update(name="compose", num_train=24, num_validation=12)
    config.eval.update(metrics=("composition",), num_samples=12, loss_examples=12, reference_examples=12)
    validation = open_run_data(config).validation
    scenes = {compose.caption_long(scene, i // 6): scene for i, scene in enumerate(_scenes("validation", 12))}
    assert sorted(validation["caption"]) == sorted(scenes)
    for i, caption in enumerate(validation["caption"]):
        assert compose.scene_of(validation, i) == scenes[caption]

    def evaluate(images):
        generator = lambda params, text, mask, batch_size: images[:len(text)]  # noqa: E731
        return Evaluator(config, validation, None, generator, space=None)(step=0, params=None)

    right = evaluate(validation["image"])
    assert {f"composition/{name}" for name in (*compose.CATEGORIES, "overall", "counting_se")} <= set(right)
    assert all(value == float(not name.endswith("_se")) for name, value in right.items() if name != "step")
    shifted = evaluate(np.roll(validation["image"], 1, axis=0))
    assert shifted["composition/overall"] < 0.5 and shifted["composition/overall_se"] > 0
