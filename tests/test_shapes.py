"""The synthetic shapes dataset: scenes, splits, captions and the TFDS builder."""

import hashlib
import itertools
import os

import numpy as np
import pytest
import scipy.ndimage

from conftest import assert_examples_repeat
from t2ijax.data import shapes, shapes_tfds


def _scenes(split, num):
    return [shapes.sample_scene(split, i) for i in range(num)]


def test_same_seed_gives_identical_examples():
    assert_examples_repeat(shapes.example, shapes.SPLITS, 20)
    assert _scenes("train", 20) != [shapes.sample_scene("train", i, seed=1) for i in range(20)]


def test_held_out_triples_leave_every_pair_in_training():
    held = shapes.held_out_triples()
    every = set(
        itertools.product(*(range(len(v)) for v in (shapes.SHAPES, shapes.COLOURS, shapes.POSITIONS)))
    )
    assert held < every and 0.10 <= len(held) / len(every) <= 0.15
    train = every - held
    for a, b in itertools.combinations(range(3), 2):
        wanted = {(t[a], t[b]) for t in every}
        assert {(t[a], t[b]) for t in train} == wanted, (a, b)


def test_train_never_and_validation_always_shows_a_held_out_triple():
    held = shapes.held_out_triples()

    def held_objects(scene):
        return sum((o.shape, o.colour, o.position) in held for o in scene.objects)

    assert all(held_objects(s) == 0 for s in _scenes("train", 2000))
    validation = _scenes("validation", 500)
    assert all(held_objects(s) >= 1 for s in validation)
    assert {(o.shape, o.colour, o.position) for s in validation for o in s.objects} >= held


def test_layouts_and_object_counts():
    scenes = _scenes("train", 1000) + _scenes("validation", 300)
    counts = [len(s.objects) for s in scenes]
    assert set(counts) == {1, 2} and 0.3 < np.mean(np.array(counts) == 1) < 0.7
    for scene in scenes:
        if len(scene.objects) == 2:
            assert tuple(o.position for o in scene.objects) in shapes.LAYOUTS


@pytest.mark.parametrize("size", [(32, 32), (64, 64), (32, 64), (64, 32), (24, 44)])
def test_render_sizes_scale_and_objects_stay_apart(size):
    height, width = size
    for scene in _scenes("train", 200):
        masks = [shapes.object_mask(o, height, width) for o in scene.objects]
        for obj, mask in zip(scene.objects, masks):
            rows, cols = np.nonzero(mask)
            extent = max(np.ptp(rows), np.ptp(cols)) + 1
            want = round(shapes.SIZE_FRACTIONS[obj.size] * min(size))  # of the shorter side
            assert want - 1 <= extent <= want, (obj, extent)
            assert rows.min() > 0 and cols.min() > 0 and rows.max() < height - 1 and cols.max() < width - 1
            box_centre = ((rows.min() + rows.max() + 1) / 2, (cols.min() + cols.max() + 1) / 2)
            np.testing.assert_allclose(box_centre, shapes.position_centre(obj.position, height, width), atol=0.5)
        if len(masks) == 2:
            assert not (scipy.ndimage.binary_dilation(masks[0]) & masks[1]).any()
        image = shapes.render(scene, height, width)
        assert image.shape == (height, width, 3) and image.dtype == np.uint8
        for obj, mask in zip(scene.objects, masks):
            assert (image[mask] == shapes.COLOUR_RGB[obj.colour]).all()
        assert (image[~np.any(masks, axis=0)] == shapes.BACKGROUND_RGB[scene.background]).all()


def test_square_renders_are_those_the_demo_was_trained_on():
    """Digest of the images before rendering took (height, width): square datasets, hence results, stay put."""
    digest = hashlib.sha256()
    for resolution in (32, 64):
        for split in shapes.SPLITS:
            for i in range(100):
                digest.update(shapes.example(split, i, resolution)["image"].tobytes())
    assert digest.hexdigest() == "c13bea3cb8661d51ddeea9d06b658f31d5965c01ed712ce1cb67a99702f2fad0"


def test_captions_spell_out_the_attributes():
    phrases = dict(zip(range(len(shapes.POSITIONS)), ("left", "right", "top", "bottom", "center")))
    for i, scene in enumerate(_scenes("train", 100) + _scenes("validation", 100)):
        long, short = shapes.caption_long(scene, phrasing=i), shapes.caption_short(scene)
        assert shapes.BACKGROUNDS[scene.background] + " background" in long
        for obj in scene.objects:
            words = f"{shapes.SIZES[obj.size]} {shapes.COLOURS[obj.colour]} {shapes.SHAPES[obj.shape]}"
            assert words in long and phrases[obj.position] in long
            assert f"{shapes.COLOURS[obj.colour]} {shapes.SHAPES[obj.shape]}" in short
        assert short.count(",") == len(scene.objects) - 1


def test_attributes_are_padded():
    scene = shapes.Scene((shapes.SceneObject(shape=2, colour=3, size=1, position=4),), background=1)
    attrs = shapes.attributes(scene)
    assert attrs["num_objects"] == 1 and attrs["background"] == 1
    for key, value in (("shape", 2), ("colour", 3), ("size", 1), ("position", 4)):
        assert attrs[key].dtype == np.int32
        np.testing.assert_array_equal(attrs[key], [value, -1])


def test_registered_configs():
    assert {"32", "64"} <= set(shapes_tfds.Shapes.builder_configs)
    assert shapes_tfds.make_config(32).name == shapes_tfds.make_config((32, 32)).name == "32"
    assert shapes_tfds.make_config(32, num_train=100).name != "32"
    assert shapes_tfds.make_config((32, 64)).name == "32x64"
    assert shapes_tfds.make_config((32, 64), stride=3, residues=(2, 0)).name == "32x64_mod3_0+2"
    assert shapes_tfds.make_config(32, stride=2, residues=(0, 1)).name == "32"  # every residue: every example


def test_tfds_build_load_and_rebuild(tmp_path):
    data_dir = str(tmp_path)
    builder = shapes_tfds.build(data_dir, 32, num_train=48, num_validation=16)
    files = sorted(builder.data_path.iterdir())
    stamps = [os.stat(f).st_mtime_ns for f in files]

    for split, num in (("train", 48), ("validation", 16)):
        data = shapes_tfds.load_split(data_dir, 32, split, num_train=48, num_validation=16)
        assert data["image"].shape == (num, 32, 32, 3) and data["image"].dtype == np.uint8
        for key in ("caption_long", "caption_short"):
            assert data[key].shape == (num,) and all(isinstance(s, str) for s in data[key])
        assert data["num_objects"].shape == data["background"].shape == (num,)
        for key in ("shape", "colour", "size", "position"):
            assert data[key].shape == (num, 2) and data[key].dtype == np.int32
        # The long caption fixes the whole scene, so it keys the stored examples.
        expected = {e["caption_long"]: e for e in (shapes.example(split, i, 32) for i in range(num))}
        assert sorted(data["caption_long"]) == sorted(expected)
        for i, caption in enumerate(data["caption_long"]):
            np.testing.assert_array_equal(data["image"][i], expected[caption]["image"])
            np.testing.assert_array_equal(data["shape"][i], expected[caption]["shape"])

    again = shapes_tfds.build(data_dir, 32, num_train=48, num_validation=16)
    assert sorted(again.data_path.iterdir()) == files
    assert [os.stat(f).st_mtime_ns for f in files] == stamps

    other = shapes_tfds.build(data_dir, 32, num_train=24, num_validation=16)
    assert other.data_path != builder.data_path
    assert len(shapes_tfds.load_split(data_dir, 32, "train", num_train=24, num_validation=16)["image"]) == 24
