"""Synthetic captioned shapes: vocabulary, scenes, rasteriser, captions, splits (numpy only).

A scene holds one or two objects on a plain background. One object may sit at any
position; two objects use a complementary layout (left+right or top+bottom) and are
listed in reading order (left before right, top before bottom). Everything scales with
the image: positions with each side, object sizes with the shorter one (so a circle stays
round at any aspect); at 32 px a small object is 10 px across and a large one 14 px.

The validation split holds (shape, colour, position) triples never seen in training;
see `held_out_triples`. The TFDS builder lives in `shapes_tfds`.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

import numpy as np

SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple")
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "center")
BACKGROUNDS = ("black", "dark gray", "light gray", "white")

# Object colours are >= 108 apart from each other and >= 136 from every background.
COLOUR_RGB = np.array(
    [
        (220, 30, 30),
        (255, 135, 0),
        (245, 235, 40),
        (40, 190, 50),
        (30, 215, 230),
        (40, 70, 230),
        (160, 50, 210),
    ],
    np.uint8,
)
BACKGROUND_RGB = np.array([(0, 0, 0), (55, 55, 55), (185, 185, 185), (255, 255, 255)], np.uint8)

SIZE_FRACTIONS = (10 / 32, 14 / 32)  # object extent / shorter image side
POSITION_CENTRES = ((0.5, 0.25), (0.5, 0.75), (0.25, 0.5), (0.75, 0.5), (0.5, 0.5))  # (y / height, x / width)
LAYOUTS = ((0, 1), (2, 3))  # left+right, top+bottom
CENTER = POSITIONS.index("center")
MAX_OBJECTS = 2
SPLITS = ("train", "validation")
HELD_OUT_FRACTION = 0.12

_POSITION_PHRASES = ("on the left", "on the right", "at the top", "at the bottom", "in the center")
_LONG_TEMPLATES = (
    "A {objects}, on a {background} background.",
    "On a {background} background, a {objects}.",
    "A picture of a {objects} against a {background} background.",
)


@dataclasses.dataclass(frozen=True)
class SceneObject:
    shape: int
    colour: int
    size: int
    position: int


@dataclasses.dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    background: int


# ---------------------------------------------------------------- rasteriser


def position_centre(position: int, height: int, width: int | None = None) -> tuple[float, float]:
    """Pixel (y, x) of an object's bounding-box centre at `position`: a fraction of each side."""
    fy, fx = POSITION_CENTRES[position]
    return fy * height, fx * (height if width is None else width)


def object_mask(obj: SceneObject, height: int, width: int | None = None) -> np.ndarray:
    """Read-only boolean [H, W] mask: which pixel centres fall inside the object."""
    return _silhouette(obj.shape, obj.size, obj.position, height, height if width is None else width)


@functools.cache  # only |SHAPES| * |SIZES| * |POSITIONS| silhouettes per image size
def _silhouette(shape: int, size: int, position: int, height: int, width: int) -> np.ndarray:
    half = SIZE_FRACTIONS[size] * min(height, width) / 2  # of the shorter side: circles stay round
    cy, cx = position_centre(position, height, width)
    dy = np.arange(height)[:, None] + 0.5 - cy
    dx = np.arange(width)[None, :] + 0.5 - cx
    name = SHAPES[shape]
    if name == "circle":
        mask = dx**2 + dy**2 < half**2
    elif name == "square":
        mask = (np.abs(dx) < half) & (np.abs(dy) < half)
    elif name == "triangle":  # apex up, width = height, so it fills half its bounding box
        depth = dy + half  # distance below the apex
        mask = (depth > 0) & (dy < half) & (np.abs(dx) < depth / 2)
    else:
        raise ValueError(f"unknown shape {name}")
    mask.flags.writeable = False
    return mask


def paint(background: np.ndarray, masks_and_colours, height: int, width: int) -> np.ndarray:
    """uint8 [H, W, 3]: the `background` RGB, then each (boolean mask, RGB) over it in turn; no antialiasing."""
    image = np.empty((height, width, 3), np.uint8)
    image[:] = background
    for mask, colour in masks_and_colours:
        image[mask] = colour
    return image


def render(scene: Scene, height: int, width: int | None = None) -> np.ndarray:
    """uint8 [H, W, 3] image of the scene (square when `width` is None)."""
    width = height if width is None else width
    return paint(BACKGROUND_RGB[scene.background],
                 ((object_mask(obj, height, width), COLOUR_RGB[obj.colour]) for obj in scene.objects), height, width)


# ------------------------------------------------------------------ captions


def _describe(obj: SceneObject) -> str:
    return f"{SIZES[obj.size]} {COLOURS[obj.colour]} {SHAPES[obj.shape]} {_POSITION_PHRASES[obj.position]}"


def caption_long(scene: Scene, phrasing: int = 0) -> str:
    """Every attribute spelled out; `phrasing` picks one of a few sentence templates."""
    objects = " and a ".join(_describe(obj) for obj in scene.objects)
    template = _LONG_TEMPLATES[phrasing % len(_LONG_TEMPLATES)]
    return template.format(objects=objects, background=BACKGROUNDS[scene.background])


def caption_short(scene: Scene) -> str:
    """Colour and shape only, e.g. "red circle, blue triangle"."""
    return ", ".join(f"{COLOURS[o.colour]} {SHAPES[o.shape]}" for o in scene.objects)


# ---------------------------------------------------------------- attributes


def attributes(scene: Scene) -> dict[str, np.ndarray]:
    """Fixed-size attribute arrays; per-object entries padded to MAX_OBJECTS with -1."""
    out = {"num_objects": np.int32(len(scene.objects)), "background": np.int32(scene.background)}
    for field in ("shape", "colour", "size", "position"):
        values = [getattr(obj, field) for obj in scene.objects]
        out[field] = np.array(values + [-1] * (MAX_OBJECTS - len(values)), np.int32)
    return out


# -------------------------------------------------------------------- splits


@functools.cache
def held_out_triples() -> frozenset[tuple[int, int, int]]:
    """(shape, colour, position) triples reserved for validation.

    Picked greedily from a fixed permutation so that no two held-out triples share any
    pair; hence every (shape, colour), (shape, position) and (colour, position) pair
    keeps all but at most one of its triples in training.
    """
    triples = list(itertools.product(range(len(SHAPES)), range(len(COLOURS)), range(len(POSITIONS))))
    target = round(HELD_OUT_FRACTION * len(triples))
    chosen, used_pairs = [], set()
    for k in np.random.default_rng(0).permutation(len(triples)):
        s, c, p = triples[k]
        pairs = {("sc", s, c), ("sp", s, p), ("cp", c, p)}
        if not pairs & used_pairs:
            chosen.append((s, c, p))
            used_pairs |= pairs
            if len(chosen) == target:
                break
    return frozenset(chosen)


def _triple(obj: SceneObject) -> tuple[int, int, int]:
    return obj.shape, obj.colour, obj.position


def _random_scene(rng: np.random.Generator) -> Scene:
    def obj(position):
        return SceneObject(
            int(rng.integers(len(SHAPES))),
            int(rng.integers(len(COLOURS))),
            int(rng.integers(len(SIZES))),
            position,
        )

    if rng.random() < 0.5:
        objects = (obj(int(rng.integers(len(POSITIONS)))),)
    else:
        objects = tuple(obj(p) for p in LAYOUTS[rng.integers(len(LAYOUTS))])
    return Scene(objects, int(rng.integers(len(BACKGROUNDS))))


def _validation_scene(rng: np.random.Generator) -> Scene:
    """A random scene in which one object is forced onto a held-out triple."""
    scene = _random_scene(rng)
    held = sorted(t for t in held_out_triples() if len(scene.objects) == 1 or t[2] != CENTER)
    shape, colour, position = held[rng.integers(len(held))]
    forced = SceneObject(shape, colour, int(rng.integers(len(SIZES))), position)
    if len(scene.objects) == 1:
        return Scene((forced,), scene.background)
    layout = next(pair for pair in LAYOUTS if position in pair)
    partner = scene.objects[0]
    objects = [forced, SceneObject(partner.shape, partner.colour, partner.size, sum(layout) - position)]
    return Scene(tuple(sorted(objects, key=lambda o: o.position)), scene.background)


def sample_scene(split: str, index: int, seed: int = 0) -> Scene:
    """The `index`-th scene of `split`; a pure function of its arguments."""
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    if split == "validation":
        return _validation_scene(rng)
    held = held_out_triples()
    while True:
        scene = _random_scene(rng)
        if not any(_triple(o) in held for o in scene.objects):
            return scene


def example(split: str, index: int, height: int, width: int | None = None, seed: int = 0) -> dict:
    """One dataset example: image (square when `width` is None), both captions and the attribute arrays."""
    scene = sample_scene(split, index, seed)
    return {
        "image": render(scene, height, width),
        "caption_long": caption_long(scene, phrasing=index),
        "caption_short": caption_short(scene),
        **attributes(scene),
    }
