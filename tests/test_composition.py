"""The analytic shapes detector: exact on renders, robust to mild damage, and able to fail."""

import numpy as np
import pytest
import scipy.ndimage

from t2ijax.data import shapes
from t2ijax.metrics import composition

NUM = 120  # scenes per (resolution, split)


def _batch(split, height, width=None, num=NUM):
    examples = [shapes.example(split, i, height, width) for i in range(num)]
    images = np.stack([e["image"] for e in examples])
    keys = ("num_objects", "shape", "colour", "size", "position", "background")
    return images, {key: np.stack([e[key] for e in examples]) for key in keys}


def _damage(images, rng, noise=8.0, blur=0.7, fade=1.0, backgrounds=None):
    """Noise (uint8 units), blur (pixels at 32 px, scaled) and fading towards the background."""
    x = images.astype(np.float32)
    if fade != 1.0:
        bg = shapes.BACKGROUND_RGB[backgrounds][:, None, None, :].astype(np.float32)
        x = bg + fade * (x - bg)
    sigma = blur * min(images.shape[1:3]) / 32
    x = scipy.ndimage.gaussian_filter(x, (0, sigma, sigma, 0)) + rng.normal(0.0, noise, x.shape)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("size", [(32, 32), (64, 64), (32, 64), (64, 32)])
@pytest.mark.parametrize("split", shapes.SPLITS)
def test_exact_on_dataset_images(split, size):
    """Positions relative to each side, sizes to the shorter one, as the renderer draws them."""
    result = composition.score(*_batch(split, *size))
    assert result == dict.fromkeys(result, 1.0)
    assert {"colour", "shape", "position", "count", "object", "scene"} <= set(result)


@pytest.mark.parametrize("size", [(32, 32), (64, 64), (32, 64)])
def test_robust_to_noise_blur_and_fading(size):
    images, attrs = _batch("validation", *size)
    rng = np.random.default_rng(0)
    for damaged in (_damage(images, rng), _damage(images, rng, fade=0.6, backgrounds=attrs["background"])):
        result = composition.score(damaged, attrs)
        assert min(result.values()) >= 0.95, result


@pytest.mark.parametrize("size", [(64, 64), (32, 64), (64, 32)])
def test_detections_match_the_scene(size):
    for i in range(30):
        scene = shapes.sample_scene("train", i)
        found = sorted(composition.detect(shapes.render(scene, *size)), key=lambda d: d.position)
        assert len(found) == len(scene.objects)
        for obj, det in zip(scene.objects, found):
            assert (det.shape, det.colour, det.size, det.position) == (
                obj.shape,
                obj.colour,
                obj.size,
                obj.position,
            )
            true_area = shapes.object_mask(obj, *size).sum()
            assert abs(det.area - true_area) <= 0.05 * true_area
            cy, cx = shapes.position_centre(obj.position, *size)
            assert abs(det.box_centre[0] - cy) <= 1 and abs(det.box_centre[1] - cx) <= 1


def test_scores_low_for_other_scenes_attributes():
    images, attrs = _batch("train", 32)
    shuffled = np.random.default_rng(0).permutation(len(images))
    result = composition.score(images[shuffled], attrs)
    assert result["object"] < 0.2 and result["scene"] < 0.1 and result["colour"] < 0.4


def test_swapping_one_attribute_is_caught():
    images, attrs = _batch("train", 32)
    for key, vocabulary in (("colour", shapes.COLOURS), ("shape", shapes.SHAPES)):
        wrong = dict(attrs)
        wrong[key] = np.where(attrs[key] >= 0, (attrs[key] + 1) % len(vocabulary), -1)
        result = composition.score(images, wrong)
        assert result[key] == 0.0 and result["object"] == 0.0 and result["scene"] == 0.0


def test_blank_background_scores_zero():
    images, attrs = _batch("validation", 32, num=20)
    blank = np.broadcast_to(shapes.BACKGROUND_RGB[attrs["background"]][:, None, None, :], images.shape)
    assert composition.detect(blank[0]) == []
    result = composition.score(np.ascontiguousarray(blank), attrs)
    assert result == dict.fromkeys(result, 0.0)
