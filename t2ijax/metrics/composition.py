"""Compositional accuracy of generated shapes images: an exact analytic detector.

No learned weights. `detect` finds the objects in one image; `score` compares the
detections of a batch with the attributes of the prompts that made it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.ndimage
import scipy.optimize

from t2ijax.data import shapes

SMOOTHING = 0.7 / 32  # gaussian sigma / shorter side applied before segmenting: tames pixel noise
FAINTEST = 0.25  # least mix of an object colour into the background that can be an object
MIN_AREA_FRACTION = 0.01  # components smaller than this share of the shorter side squared are specks
# A triangle's centroid sits 1/6 of its height below its box centre (about 0.14 once
# rasterised); circles and squares are symmetric. Blur erodes the apex, which lowers it.
TRIANGLE_LOW_ABOVE = 0.06
# Circles fill pi/4 of their box, squares all of it; blur and noise only lower the fill
# (rounded corners, ragged edges), so the cut sits near the circle.
CIRCLE_FILL_BELOW = 0.85
# Share of its bounding box each shape fills; turns an area into an extent, which is
# steadier than the box itself when blur eats thin corners.
BOX_FILL = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5}
LARGE_ABOVE = sum(shapes.SIZE_FRACTIONS) / 2  # object extent / shorter image side
CENTER_RADIUS = 1 / 8  # |box centre - image centre| / that side, on both axes, under which an object is centred


@dataclasses.dataclass(frozen=True)
class Detection:
    shape: int
    colour: int
    size: int
    position: int
    area: int  # pixels
    centroid: tuple[float, float]  # (y, x) in pixels
    box_centre: tuple[float, float]  # (y, x) in pixels


def background_colour(image: np.ndarray) -> np.ndarray:
    """Per-channel median of the one-pixel border (objects never reach the border)."""
    border = np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])
    return np.median(border.astype(np.float32), axis=0)


def explain(rgb: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reads colours [..., 3] as mixes of the background and one palette colour.

    The colour is the one whose background-to-colour segment passes closest; returns its
    index [...] and how far along that segment each input sits, in [0, 1] [...]. So the
    blurred edge of an object, or a faded object, keeps its own colour.
    """
    offsets = rgb.astype(np.float32) - background
    directions = shapes.COLOUR_RGB.astype(np.float32) - background  # [C, 3]
    lengths2 = np.sum(directions**2, axis=-1)
    dots = offsets @ directions.T  # [..., C]
    mix = np.clip(dots / lengths2, 0.0, 1.0)
    residual2 = np.sum(offsets**2, axis=-1, keepdims=True) - 2 * mix * dots + mix**2 * lengths2
    colour = np.argmin(residual2, axis=-1)
    return colour, np.take_along_axis(mix, colour[..., None], axis=-1)[..., 0]


def silhouettes(strength: np.ndarray) -> np.ndarray:
    """Boolean [H, W]: each faint-or-stronger region cut at half its own peak strength.

    Half-way is where a blurred edge crosses the true outline; it also drops the
    faint bridge blur draws between two close objects.
    """
    regions, _ = scipy.ndimage.label(strength > FAINTEST)
    out = np.zeros_like(regions, dtype=bool)
    for index, box in enumerate(scipy.ndimage.find_objects(regions), start=1):
        region = regions[box] == index
        peak = np.percentile(strength[box][region], 90)
        out[box] |= region & (strength[box] > peak / 2)
    return out


def classify_shape(fill: float, low: float) -> int:
    if low > TRIANGLE_LOW_ABOVE:
        return shapes.SHAPES.index("triangle")
    return shapes.SHAPES.index("circle" if fill < CIRCLE_FILL_BELOW else "square")


def classify_position(box_centre: tuple[float, float], height: int, width: int) -> int:
    """As the renderer places objects: offsets from the centre as fractions of each side."""
    dy, dx = np.asarray(box_centre) / (height, width) - 0.5
    if max(abs(dy), abs(dx)) < CENTER_RADIUS:
        return shapes.POSITIONS.index("center")
    if abs(dx) >= abs(dy):
        return shapes.POSITIONS.index("left" if dx < 0 else "right")
    return shapes.POSITIONS.index("top" if dy < 0 else "bottom")


def detect(image: np.ndarray) -> list[Detection]:
    """Objects in a uint8 [H, W, 3] image.

    Background: the border's colour. The image is lightly smoothed and each pixel read
    as a mix of background and a palette colour (`explain`); every connected component
    of the `silhouettes` of that mix that is not a speck is an object. Colour: `explain`
    of the median RGB of the component's stronger half. From the component's bounding
    box: shape from how low its centroid sits in the box (triangle) and else from the
    fill ratio (circle < square); size from the extent its area implies for that shape;
    position from the box centre, since a triangle's centroid sits below it. Positions are judged
    relative to each side and sizes relative to the shorter side, as `shapes.render` draws them.
    """
    height, width = image.shape[:2]
    side = min(height, width)
    background = background_colour(image)
    sigma = SMOOTHING * side
    smooth = scipy.ndimage.gaussian_filter(image.astype(np.float32), (sigma, sigma, 0))
    _, strength = explain(smooth, background)
    labels, _ = scipy.ndimage.label(silhouettes(strength))
    detections = []
    for index, box in enumerate(scipy.ndimage.find_objects(labels), start=1):
        ys, xs = np.nonzero(labels[box] == index)
        if len(ys) < MIN_AREA_FRACTION * side**2:
            continue
        ys, xs = ys + box[0].start, xs + box[1].start
        stronger = strength[ys, xs] >= np.median(strength[ys, xs])
        colour, _ = explain(np.median(image[ys[stronger], xs[stronger]], axis=0), background)
        box_height, box_width = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        box_centre = (float(ys.min() + ys.max() + 1) / 2, float(xs.min() + xs.max() + 1) / 2)
        centroid = (float(ys.mean() + 0.5), float(xs.mean() + 0.5))
        shape = classify_shape(len(ys) / (box_height * box_width), (centroid[0] - box_centre[0]) / box_height)
        extent = np.sqrt(len(ys) / BOX_FILL[shapes.SHAPES[shape]])
        detections.append(
            Detection(
                shape=shape,
                colour=int(colour),
                size=int(extent / side > LARGE_ABOVE),
                position=classify_position(box_centre, height, width),
                area=len(ys),
                centroid=centroid,
                box_centre=box_centre,
            )
        )
    return detections


def _match_cost(prompt: dict[str, int], found: Detection, height: int, width: int) -> float:
    """Wrong position or colour costs most; distance to the expected place (as fractions of each side) breaks ties."""
    expected = np.array(shapes.position_centre(prompt["position"], height, width))
    offset = np.linalg.norm((np.array(found.box_centre) - expected) / (height, width))
    return (
        2.0 * (found.position != prompt["position"])
        + 2.0 * (found.colour != prompt["colour"])
        + 1.0 * (found.shape != prompt["shape"])
        + offset
    )


def score(images: np.ndarray, attributes: dict[str, np.ndarray]) -> dict[str, float]:
    """Accuracies in [0, 1] of images uint8 [N, H, W, 3] against their prompts' attributes.

    `attributes` holds the dataset's arrays (num_objects [N]; shape, colour, size,
    position [N, 2]). A scene's prompt objects are matched one-to-one to its detections
    by the Hungarian algorithm on `_match_cost`; a prompt object left without a detection
    is wrong on every attribute. Averaged over all prompt objects: `colour`, `shape`,
    `position`, `size`, and `object` (colour, shape and position all right). Averaged
    over scenes: `count` (as many detections as prompt objects) and `scene` (count right
    and every object right).
    """
    images = np.asarray(images)
    attributes = {key: np.asarray(value) for key, value in attributes.items()}
    height, width = images.shape[1:3]
    per_object = {key: [] for key in ("colour", "shape", "position", "size", "object")}
    per_scene = {"count": [], "scene": []}
    for i, image in enumerate(images):
        prompts = [
            {key: int(attributes[key][i][j]) for key in ("shape", "colour", "size", "position")}
            for j in range(int(attributes["num_objects"][i]))
        ]
        found = detect(image)
        matched = [None] * len(prompts)
        if found and prompts:
            cost = [[_match_cost(p, f, height, width) for f in found] for p in prompts]
            for row, col in zip(*scipy.optimize.linear_sum_assignment(np.array(cost))):
                matched[row] = found[col]
        objects_right = []
        for prompt, detection in zip(prompts, matched):
            right = {
                key: detection is not None and getattr(detection, key) == prompt[key]
                for key in ("colour", "shape", "position", "size")
            }
            right["object"] = right["colour"] and right["shape"] and right["position"]
            for key, value in right.items():
                per_object[key].append(value)
            objects_right.append(right["object"])
        count_right = len(found) == len(prompts)
        per_scene["count"].append(count_right)
        per_scene["scene"].append(count_right and all(objects_right))
    return {
        key: float(np.mean(values)) if values else 0.0 for key, values in {**per_object, **per_scene}.items()
    }
