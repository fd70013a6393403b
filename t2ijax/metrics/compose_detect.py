"""GenEval-style accuracy of generated compose images (t2ijax/data/compose.py): an exact analytic detector.

No learned weights. `detect` reads the object in each cell of the 3x3 grid: the cell's largest patch of
pixels far from the background (the border's colour, composition.background_colour); its colour is the
palette colour nearest the patch's median; its shape and size are those of the silhouette which, drawn at
the patch's box centre, overlaps the patch best (intersection over union). The renderer centres objects on
pixel centres, so a rendered object's box centre is where it was drawn and its own silhouette overlaps it
exactly. `satisfies` checks a prompt's category on the detected objects; `score` averages over a batch.
"""

from __future__ import annotations

import itertools

import numpy as np
import scipy.ndimage

from t2ijax.data import compose
from t2ijax.metrics.composition import background_colour

# A pixel belongs to an object when it lies farther from the background than this share of the distance
# to the palette colour nearest the background: half-way, as a blurred edge crosses the outline.
FOREGROUND_ABOVE = 0.5
MIN_CELL_SHARE = 0.05  # least share of its cell's pixels an object covers (the smallest covers ~0.2); less: specks
_EIGHT_NEIGHBOURS = np.ones((3, 3), bool)


def _largest_patch(mask: np.ndarray) -> np.ndarray:
    labels, count = scipy.ndimage.label(mask, structure=_EIGHT_NEIGHBOURS)
    if count <= 1:
        return mask
    return labels == 1 + np.argmax(np.bincount(labels.ravel())[1:])


def _fit(patch: np.ndarray, rows: np.ndarray, columns: np.ndarray, height: int, width: int) -> tuple[int, int]:
    """(shape, size) whose silhouette, centred on the patch's bounding box, has the highest IoU with it."""
    ys, xs = np.nonzero(patch)
    centre = (rows[0] + (ys.min() + ys.max() + 1) / 2, columns[0] + (xs.min() + xs.max() + 1) / 2)

    def overlap(shape_size: tuple[int, int]) -> float:
        shape, size = shape_size
        template = compose.silhouette(shape, compose.half_extent(size, height, width), centre, rows, columns)
        return np.sum(template & patch) / np.sum(template | patch)

    return max(itertools.product(range(len(compose.SHAPES)), range(len(compose.SIZES))), key=overlap)


def detect(image: np.ndarray) -> list[compose.SceneObject]:
    """The objects in a uint8 [H, W, 3] image, at most one per cell, in cell order."""
    height, width = image.shape[:2]
    compose.check_size(height, width)
    background = background_colour(image)
    distance = np.linalg.norm(image.astype(np.float32) - background, axis=-1)
    nearest = np.min(np.linalg.norm(compose.COLOUR_RGB.astype(np.float32) - background, axis=-1))
    foreground = distance > FOREGROUND_ABOVE * nearest
    found = []
    for cell in range(compose.GRID**2):
        top, bottom, left, right = compose.cell_bounds(cell, height, width)
        patch = _largest_patch(foreground[top:bottom, left:right])
        if patch.sum() < MIN_CELL_SHARE * patch.size:
            continue
        median = np.median(image[top:bottom, left:right][patch].astype(np.float32), axis=0)
        colour = int(np.argmin(np.linalg.norm(compose.COLOUR_RGB.astype(np.float32) - median, axis=-1)))
        shape, size = _fit(patch, np.arange(top, bottom), np.arange(left, right), height, width)
        found.append(compose.SceneObject(shape, colour, size, cell))
    return found


def _count(objects, shape: int, colour: int | None = None) -> int:
    return sum(o.shape == shape and (colour is None or o.colour == colour) for o in objects)


def _position(found: list[compose.SceneObject], prompt: compose.Scene) -> bool:
    """Some detected pair with the two named objects' shapes and colours stands in the stated relation."""
    a, b = prompt.objects[:2]
    return any(compose.relation_holds(prompt.relation, x.cell, y.cell)
               for x in found if (x.shape, x.colour) == (a.shape, a.colour)
               for y in found if (y.shape, y.colour) == (b.shape, b.colour) and y is not x)


def _single_object(found: list[compose.SceneObject], prompt: compose.Scene) -> bool:
    return _count(found, prompt.objects[0].shape) > 0


def _two_objects(found: list[compose.SceneObject], prompt: compose.Scene) -> bool:
    return all(_count(found, obj.shape) > 0 for obj in prompt.objects[:2])


def _counting(found: list[compose.SceneObject], prompt: compose.Scene) -> bool:
    """Exactly as many of the counted shape and colour as the prompt names, whatever else is there."""
    first = prompt.objects[0]
    return _count(found, first.shape, first.colour) == _count(prompt.objects, first.shape, first.colour)


def _colours(found: list[compose.SceneObject], prompt: compose.Scene) -> bool:
    return _count(found, prompt.objects[0].shape, prompt.objects[0].colour) > 0


def _colour_attribution(found: list[compose.SceneObject], prompt: compose.Scene) -> bool:
    return all(_count(found, obj.shape, obj.colour) > 0 for obj in prompt.objects)


# What each category checks (GenEval's conditions), from the detected objects and the prompt's scene.
CONDITIONS = dict(zip(compose.CATEGORIES,
                      (_single_object, _two_objects, _counting, _colours, _position, _colour_attribution)))


def satisfies(found: list[compose.SceneObject], prompt: compose.Scene) -> bool:
    """Whether the detected objects meet what the prompt's category checks."""
    return bool(CONDITIONS[compose.CATEGORIES[prompt.category]](found, prompt))


def judge(found: list[list[compose.SceneObject]], scenes: list[compose.Scene]) -> tuple[np.ndarray, np.ndarray]:
    """Per image, from its detected objects (`detect`) and its prompt's scene: bool [N] whether its category's
    condition holds, and bool [N] whether its objects are exactly the scene's (shape, colour, size and cell of
    each, and no others)."""
    satisfied = [satisfies(objects, scene) for objects, scene in zip(found, scenes)]
    exact = [sorted(objects, key=lambda o: o.cell) == sorted(scene.objects, key=lambda o: o.cell)
             for objects, scene in zip(found, scenes)]
    return np.array(satisfied, bool), np.array(exact, bool)


def _binomial_se(hits: np.ndarray) -> float:
    p = float(np.mean(hits))
    return float(np.sqrt(p * (1 - p) / len(hits)))


def _per_object(found: list[list[compose.SceneObject]], scenes: list[compose.Scene]) -> dict[str, list[bool]]:
    """For every object of every scene, whether the detection in its cell (if any) has its colour, shape and
    size, and all three ("object"); "cell" is whether anything was detected there."""
    right = {key: [] for key in ("cell", "colour", "shape", "size", "object")}
    for objects, scene in zip(found, scenes):
        by_cell = {o.cell: o for o in objects}
        for obj in scene.objects:
            there = by_cell.get(obj.cell)
            checks = {key: there is not None and getattr(there, key) == getattr(obj, key)
                      for key in ("colour", "shape", "size")}
            checks.update(cell=there is not None, object=all(checks.values()))
            for key, value in checks.items():
                right[key].append(value)
    return right


def score(images: np.ndarray, attributes: dict[str, np.ndarray]) -> dict[str, float]:
    """Accuracies in [0, 1], each with its binomial standard error under "<name>_se": per category present
    in the batch, the share of its images whose detected objects satisfy the prompt; `overall`, their mean
    (GenEval's overall score; its error from the categories' as independent); `scene`, the share of images
    whose objects are exactly the scene's; and per object of the scenes (what the long caption states),
    `cell`, `colour`, `shape`, `size` and `object` (colour, shape and size all right in its cell)."""
    found = [detect(image) for image in np.asarray(images)]
    scenes = [compose.scene_of(attributes, i) for i in range(len(found))]
    satisfied, exact = judge(found, scenes)
    categories = np.asarray(attributes["category"])
    hits = {name: satisfied[categories == k] for k, name in enumerate(compose.CATEGORIES) if np.any(categories == k)}
    out = {}
    for name, values in hits.items():
        out[name], out[f"{name}_se"] = float(np.mean(values)), _binomial_se(values)
    out["overall"] = float(np.mean([out[name] for name in hits]))
    out["overall_se"] = float(np.sqrt(sum(out[f"{name}_se"] ** 2 for name in hits)) / len(hits))
    for name, values in {"scene": exact, **_per_object(found, scenes)}.items():
        values = np.asarray(values, bool)
        out[name], out[f"{name}_se"] = float(np.mean(values)), _binomial_se(values)
    return out
