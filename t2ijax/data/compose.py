"""Synthetic compositional scenes: 1-4 objects on a 3x3 grid, captioned with relations, counts and bindings.

The harder sibling of `shapes` (numpy only). Every scene belongs to one of GenEval's six categories
(`CATEGORIES`): the category fixes what the scene holds and what its short caption says, and
t2ijax/metrics/compose_detect.py checks exactly that. The long caption spells out every object's size,
colour, shape and cell. Objects sit one to a cell, each centred on the pixel centre nearest its cell's
centre, so that every silhouette is symmetric about the point it is drawn at; sizes are fractions of a
cell's shorter side. Images need at least `MIN_SIDE` pixels a side.

Scenes that share a shape or a colour between two objects (counting distractors, position pairs, colour
attribution's swapped pair) test attribute binding. The validation split holds combinations never in
training (`held_out`): some colour-shape pairs, some spatial relations between two shapes, and some counts
of a shape. The TFDS builder lives in `compose_tfds`.
"""

from __future__ import annotations

import collections
import dataclasses
import functools

import numpy as np

from t2ijax.data import shapes
from t2ijax.errors import ConfigError

SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")
COLOURS = (*shapes.COLOURS, "magenta")
# shapes' palette and magenta: >= 108 apart from each other and >= 135 from every background (RGB).
COLOUR_RGB = np.concatenate([shapes.COLOUR_RGB, np.array([(255, 0, 255)], np.uint8)])
SIZES = shapes.SIZES
BACKGROUNDS, BACKGROUND_RGB = shapes.BACKGROUNDS, shapes.BACKGROUND_RGB
SPLITS = shapes.SPLITS
CATEGORIES = ("single_object", "two_objects", "counting", "colours", "position", "colour_attribution")
RELATIONS = ("to the left of", "to the right of", "above", "below")  # objects[0] <relation> objects[1]
GRID = 3  # cells per side; cell = row * GRID + column
CELL_PHRASES = ("at the top left", "at the top", "at the top right", "on the left", "in the center",
                "on the right", "at the bottom left", "at the bottom", "at the bottom right")
COUNTS = (2, 3, 4)  # how many objects a counting scene counts
NUMBER_WORDS = ("zero", "one", "two", "three", "four")
MAX_OBJECTS = 4
OBJECT_FIELDS = ("shape", "colour", "size", "cell")  # per-object attribute arrays, padded with -1
SCENE_FIELDS = ("num_objects", "category", "relation", "background")  # scalars; relation -1 off position

SIZE_FRACTIONS = (0.6, 0.85)  # object extent / a cell's shorter side: 7 and 9 px at 32, 13 and 19 at 64
RING_HOLE = 0.5  # inner / outer radius
CROSS_ARM = 1 / 3  # arm width / extent
MIN_SIDE = 32  # below, the largest objects of the outer cells reach the image border

_LONG_TEMPLATES = (
    "{objects}, on a {background} background.",
    "On a {background} background, {objects}.",
    "A picture of {objects} against a {background} background.",
)


@dataclasses.dataclass(frozen=True)
class SceneObject:
    shape: int
    colour: int
    size: int
    cell: int


@dataclasses.dataclass(frozen=True)
class Scene:
    category: int
    objects: tuple[SceneObject, ...]  # in the order the captions name them
    background: int  # -1 when read from prompt attributes that do not say
    relation: int = -1  # position: objects[0] RELATIONS[relation] objects[1]


def check_size(height: int, width: int) -> None:
    if min(height, width) < MIN_SIDE:
        raise ConfigError(f"the compose dataset draws a 3x3 grid of objects and needs images of at least {MIN_SIDE} "
                          f"px a side, not {height}x{width}; raise config.data.resolution (and eval.sizes)")


# ---------------------------------------------------------------- rasteriser


def cell_centre(cell: int, height: int, width: int) -> tuple[float, float]:
    """Pixel (y, x) an object in `cell` is drawn at: the centre of the pixel holding the cell's centre."""
    row, column = divmod(cell, GRID)
    return np.floor((row + 0.5) * height / GRID) + 0.5, np.floor((column + 0.5) * width / GRID) + 0.5


def cell_bounds(cell: int, height: int, width: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) pixel bounds of `cell`, bottom and right exclusive; the cells tile the image."""
    row, column = divmod(cell, GRID)
    return (round(row * height / GRID), round((row + 1) * height / GRID),
            round(column * width / GRID), round((column + 1) * width / GRID))


def half_extent(size: int, height: int, width: int) -> float:
    return SIZE_FRACTIONS[size] * min(height, width) / GRID / 2


def silhouette(shape: int, half: float, centre: tuple[float, float], rows: np.ndarray,
               columns: np.ndarray) -> np.ndarray:
    """Boolean [len(rows), len(columns)]: which of these pixels' centres fall inside `shape` of half-extent
    `half` centred at pixel (y, x) `centre`."""
    v = (rows[:, None] + 0.5 - centre[0]) / half  # the shape spans [-1, 1] on both axes
    u = (columns[None, :] + 0.5 - centre[1]) / half
    r2 = u**2 + v**2
    name = SHAPES[shape]
    if name == "circle":
        return r2 < 1
    if name == "square":
        return np.maximum(np.abs(u), np.abs(v)) < 1
    if name == "triangle":  # apex up, as wide as tall
        return (v > -1) & (v < 1) & (np.abs(u) < (v + 1) / 2)
    if name == "diamond":
        return np.abs(u) + np.abs(v) < 1
    if name == "cross":
        return (np.maximum(np.abs(u), np.abs(v)) < 1) & (np.minimum(np.abs(u), np.abs(v)) < CROSS_ARM)
    if name == "ring":
        return (r2 < 1) & (r2 >= RING_HOLE**2)
    raise ValueError(f"unknown shape {name}")


def object_mask(obj: SceneObject, height: int, width: int) -> np.ndarray:
    """Read-only boolean [H, W] mask of the object."""
    return _mask(obj.shape, obj.size, obj.cell, height, width)


@functools.cache  # |SHAPES| * |SIZES| * 9 cells per image size
def _mask(shape: int, size: int, cell: int, height: int, width: int) -> np.ndarray:
    mask = silhouette(shape, half_extent(size, height, width), cell_centre(cell, height, width),
                      np.arange(height), np.arange(width))
    mask.flags.writeable = False
    return mask


def render(scene: Scene, height: int, width: int | None = None) -> np.ndarray:
    """uint8 [H, W, 3] image of the scene (square when `width` is None)."""
    width = height if width is None else width
    return shapes.paint(BACKGROUND_RGB[scene.background],
                        ((object_mask(obj, height, width), COLOUR_RGB[obj.colour]) for obj in scene.objects),
                        height, width)


# ----------------------------------------------------------------- relations


def relation_holds(relation: int, cell_a: int, cell_b: int) -> bool:
    """Whether the object in `cell_a` is RELATIONS[relation] the one in `cell_b` (by row and column)."""
    (row_a, column_a), (row_b, column_b) = divmod(cell_a, GRID), divmod(cell_b, GRID)
    return (column_a < column_b, column_a > column_b, row_a < row_b, row_a > row_b)[relation]


def facts(a: SceneObject, b: SceneObject) -> set[tuple[int, int, int]]:
    """The spatial facts between two objects, as (shape, axis, shape): axis 0 "left of", 1 "above"."""
    return {(first.shape, axis, second.shape)
            for relation, (axis, first, second) in enumerate(((0, a, b), (0, b, a), (1, a, b), (1, b, a)))
            if relation_holds(relation, a.cell, b.cell)}


def stated_fact(scene: Scene) -> tuple[int, int, int]:
    """The fact a position scene's caption states, in `facts`' form ("right of" and "below" turned round)."""
    a, b = scene.objects[:2]
    first, second = (a, b) if scene.relation % 2 == 0 else (b, a)
    return first.shape, scene.relation // 2, second.shape


# ------------------------------------------------------------------ captions


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _plural(noun: str) -> str:
    return noun + ("es" if noun.endswith("s") else "s")


def _listing(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def groups(objects: tuple[SceneObject, ...]) -> list[list[SceneObject]]:
    """The objects grouped by (shape, colour), in the order their first member is named."""
    by_binding: dict[tuple[int, int], list[SceneObject]] = {}
    for obj in objects:
        by_binding.setdefault((obj.shape, obj.colour), []).append(obj)
    return list(by_binding.values())


def _counted(members: list[SceneObject], details: str = "") -> str:
    """The group by count, colour and shape ("a red circle", "three green triangles"), `details` after it."""
    colour, shape = COLOURS[members[0].colour], SHAPES[members[0].shape]
    if len(members) == 1:
        return _a(f"{colour} {shape}{details}")
    return f"{NUMBER_WORDS[len(members)]} {colour} {_plural(shape)}{details}"


def _described(members: list[SceneObject]) -> str:
    """A group with every attribute: "a small red circle at the top left", "two red circles (small at the
    top left, large in the center)"."""
    if len(members) == 1:
        obj = members[0]
        return _a(f"{SIZES[obj.size]} {COLOURS[obj.colour]} {SHAPES[obj.shape]} {CELL_PHRASES[obj.cell]}")
    places = ", ".join(f"{SIZES[o.size]} {CELL_PHRASES[o.cell]}" for o in members)
    return _counted(members, f" ({places})")


def caption_long(scene: Scene, phrasing: int = 0) -> str:
    """Every attribute of every object, the relation or the counts the scene's category is about, and the
    background; `phrasing` picks one of a few sentence templates."""
    if CATEGORIES[scene.category] == "position":
        a, b = scene.objects
        objects = f"{_described([a])}, {RELATIONS[scene.relation]} {_described([b])}"
    else:
        objects = _listing([_described(members) for members in groups(scene.objects)])
    text = _LONG_TEMPLATES[phrasing % len(_LONG_TEMPLATES)].format(
        objects=objects, background=BACKGROUNDS[scene.background])
    return text[0].upper() + text[1:]


def caption_short(scene: Scene) -> str:
    """What the category checks, as a GenEval prompt says it: "a circle", "a circle and a square", "three
    green triangles and a blue triangle", "a red circle", "a red circle to the left of a blue square", "a red
    circle and a blue square"."""
    category, objects = CATEGORIES[scene.category], scene.objects
    if category == "single_object":
        return _a(SHAPES[objects[0].shape])
    if category == "two_objects":
        return " and ".join(_a(SHAPES[obj.shape]) for obj in objects)
    if category == "position":
        return f"{_counted([objects[0]])} {RELATIONS[scene.relation]} {_counted([objects[1]])}"
    return _listing([_counted(members) for members in groups(objects)])


# ---------------------------------------------------------------- attributes


def attributes(scene: Scene) -> dict[str, np.ndarray]:
    """Fixed-size int32 arrays: SCENE_FIELDS scalars, OBJECT_FIELDS padded to MAX_OBJECTS with -1."""
    out = {"num_objects": np.int32(len(scene.objects)), "category": np.int32(scene.category),
           "relation": np.int32(scene.relation), "background": np.int32(scene.background)}
    for field in OBJECT_FIELDS:
        values = [getattr(obj, field) for obj in scene.objects]
        out[field] = np.array(values + [-1] * (MAX_OBJECTS - len(values)), np.int32)
    return out


def scene_of(attrs: dict[str, np.ndarray], index: int) -> Scene:
    """Example `index`'s scene from batched attribute arrays (`attributes`' fields, a leading batch axis;
    background may be missing)."""
    objects = tuple(SceneObject(*(int(attrs[field][index][j]) for field in OBJECT_FIELDS))
                    for j in range(int(attrs["num_objects"][index])))
    background = int(attrs["background"][index]) if "background" in attrs else -1
    return Scene(int(attrs["category"][index]), objects, background, int(attrs["relation"][index]))


# -------------------------------------------------------------------- splits


@dataclasses.dataclass(frozen=True)
class HeldOut:
    colour_shapes: frozenset[tuple[int, int]]  # (shape, colour)
    relations: frozenset[tuple[int, int, int]]  # (shape, axis, shape) as `facts` gives them
    counts: frozenset[tuple[int, int]]  # (count, shape)


@functools.cache
def held_out() -> HeldOut:
    """The combinations reserved for validation, each shape losing at most one of each kind, so every shape,
    colour, count and relation keeps most of its combinations in training: shape s (mod 6) loses colour
    3s + 1 (mod 8: a different colour for each shape), being left of shape s + 3 (so also right of it: a
    mirrored image, as flip augmentation makes, shows no held-out relation), being above shape s + 2, and
    the count c = s - 1 (for s = 3, 4, 5)."""
    num_shapes = len(SHAPES)
    return HeldOut(
        colour_shapes=frozenset((s, (3 * s + 1) % len(COLOURS)) for s in range(num_shapes)),
        relations=frozenset((s, axis, (s + (3, 2)[axis]) % num_shapes) for s in range(num_shapes) for axis in (0, 1)),
        counts=frozenset((count, (count + 1) % num_shapes) for count in COUNTS),
    )


def counts_shown(objects: tuple[SceneObject, ...]) -> set[tuple[int, int]]:
    """(count, shape) for every shape in the scene, and for every (shape, colour) group in it."""
    by_shape = collections.Counter(obj.shape for obj in objects)
    return {(n, shape) for shape, n in by_shape.items()} | {(len(m), m[0].shape) for m in groups(objects)}


def shows_held_out(scene: Scene) -> bool:
    """Whether any held-out combination is in the scene: an object's colour and shape, a count of a shape
    (`counts_shown`), or, in a position scene, a fact between its two objects."""
    held = held_out()
    position = CATEGORIES[scene.category] == "position"
    return bool({(obj.shape, obj.colour) for obj in scene.objects} & held.colour_shapes
                or counts_shown(scene.objects) & held.counts
                or (position and facts(*scene.objects) & held.relations))


def tests_held_out(scene: Scene) -> bool:
    """Whether what the scene's category checks is held out: the counted group's (count, shape), the stated
    relation, or a named object's (shape, colour) (the first one for single_object and colours)."""
    held, category, first = held_out(), CATEGORIES[scene.category], scene.objects[0]
    if category == "counting":
        return (len(groups(scene.objects)[0]), first.shape) in held.counts
    if category == "position":
        return stated_fact(scene) in held.relations
    named = scene.objects[:1] if category in ("single_object", "colours") else scene.objects[:2]
    return any((obj.shape, obj.colour) in held.colour_shapes for obj in named)


def _pick(rng: np.random.Generator, n: int) -> int:
    return int(rng.integers(n))


def _other(rng: np.random.Generator, value: int, n: int) -> int:
    """A value of range(n) other than `value`."""
    return (value + 1 + _pick(rng, n - 1)) % n


def _distractor(rng: np.random.Generator, shape: int, colour: int) -> tuple[int, int]:
    """A (shape, colour) sharing exactly one of the two with (shape, colour)."""
    if rng.random() < 0.5:
        return shape, _other(rng, colour, len(COLOURS))
    return _other(rng, shape, len(SHAPES)), colour


def _bindings(category: str, rng: np.random.Generator) -> list[tuple[int, int]]:
    """The (shape, colour) of each object of a scene of `category`, in caption order."""
    first = (_pick(rng, len(SHAPES)), _pick(rng, len(COLOURS)))
    different = (_other(rng, first[0], len(SHAPES)), _other(rng, first[1], len(COLOURS)))
    if category in ("single_object", "colours"):
        return [first]
    if category == "two_objects":  # colours may repeat
        return [first, (different[0], _pick(rng, len(COLOURS)))]
    if category == "counting":
        count = COUNTS[_pick(rng, len(COUNTS))]
        return [first] * count + [_distractor(rng, *first) for _ in range(_pick(rng, MAX_OBJECTS - count + 1))]
    if category == "position":  # half the pairs share a shape or a colour
        return [first, _distractor(rng, *first) if rng.random() < 0.5 else different]
    if category == "colour_attribution":  # half the scenes add one with the pair's attributes swapped
        swapped = [(first[0], different[1]), (different[0], first[1])][_pick(rng, 2)]
        return [first, different] + [swapped] * _pick(rng, 2)
    raise ValueError(f"unknown category {category}")


def _draw(category: int, rng: np.random.Generator) -> Scene:
    bindings = _bindings(CATEGORIES[category], rng)
    cells = rng.permutation(GRID * GRID)[:len(bindings)]
    objects = tuple(SceneObject(shape, colour, _pick(rng, len(SIZES)), int(cell))
                    for (shape, colour), cell in zip(bindings, cells))
    relation = -1
    if CATEGORIES[category] == "position":
        holding = [r for r in range(len(RELATIONS)) if relation_holds(r, objects[0].cell, objects[1].cell)]
        relation = holding[_pick(rng, len(holding))]
    return Scene(category, objects, _pick(rng, len(BACKGROUNDS)), relation)


def sample_scene(split: str, index: int, seed: int = 0) -> Scene:
    """The `index`-th scene of `split`, of category CATEGORIES[index % 6]; a pure function of its arguments.
    Training scenes show no held-out combination; in each validation scene what its category checks is one."""
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    accept = tests_held_out if split == "validation" else (lambda s: not shows_held_out(s))
    while True:
        scene = _draw(index % len(CATEGORIES), rng)
        if accept(scene):
            return scene


def example(split: str, index: int, height: int, width: int | None = None, seed: int = 0) -> dict:
    """One dataset example: image (square when `width` is None), both captions and the attribute arrays."""
    scene = sample_scene(split, index, seed)
    return {
        "image": render(scene, height, width),
        "caption_long": caption_long(scene, phrasing=index // len(CATEGORIES)),
        "caption_short": caption_short(scene),
        **attributes(scene),
    }
