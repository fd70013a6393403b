"""Prompt files for `t2ijax.evaluate`: JSON Lines, one JSON object per line.

    {"prompt": "A large red circle on the left, on a black background.",
     "objects": [{"shape": "circle", "colour": "red", "size": "large", "position": "left"}]}

`objects` lists the shapes in the scene by the shapes dataset's attribute names; it is
optional, and compositional accuracy is scored only when every line has it. Any mistake is
a one-line ConfigError naming the file and line.
"""
import json

import numpy as np

from t2ijax import storage
from t2ijax.data import shapes
from t2ijax.errors import ConfigError

FIELDS = ("prompt", "objects")
OBJECT_FIELDS = {"shape": shapes.SHAPES, "colour": shapes.COLOURS, "size": shapes.SIZES,
                 "position": shapes.POSITIONS}


def _unknown(keys, allowed, where: str) -> None:
    unknown = sorted(set(keys) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]!r}; fields are {', '.join(allowed)}")


def _object_attributes(objects, where: str) -> list[dict[str, int]]:
    if not isinstance(objects, list) or not 1 <= len(objects) <= shapes.MAX_OBJECTS:
        raise ConfigError(f"{where}: 'objects' must be a list of 1 to {shapes.MAX_OBJECTS} objects")
    out = []
    for obj in objects:
        if not isinstance(obj, dict):
            raise ConfigError(f"{where}: each object must be a JSON object, got {obj!r}")
        _unknown(obj, OBJECT_FIELDS, where)
        values = {}
        for field, names in OBJECT_FIELDS.items():
            if obj.get(field) not in names:
                raise ConfigError(f"{where}: object {field} {obj.get(field)!r} is not one of {', '.join(names)}")
            values[field] = names.index(obj[field])
        out.append(values)
    return out


def _attribute_arrays(scenes: list[list[dict[str, int]]]) -> dict[str, np.ndarray]:
    """The dataset's layout: num_objects [N]; per-object fields [N, MAX_OBJECTS] padded with -1."""
    arrays = {"num_objects": np.array([len(objects) for objects in scenes], np.int32)}
    for field in OBJECT_FIELDS:
        arrays[field] = np.full((len(scenes), shapes.MAX_OBJECTS), -1, np.int32)
        for i, objects in enumerate(scenes):
            arrays[field][i, :len(objects)] = [obj[field] for obj in objects]
    return arrays


def read_prompts(path: str) -> tuple[list[str], dict[str, np.ndarray] | None]:
    """(prompts, attribute arrays for composition scoring or None) from a JSON Lines file, local or gs://."""
    try:
        lines = storage.resolve(path).read_text().splitlines()
    except OSError as e:
        raise ConfigError(f"prompt file {path} cannot be read ({e.strerror or e})") from None
    prompts, scenes = [], []
    for number, line in enumerate(lines, start=1):
        where = f"{path}:{number}"
        if not line.strip():
            raise ConfigError(f"{where}: empty line; write one JSON object per line, e.g. {{\"prompt\": \"...\"}}")
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{where}: not JSON ({e.msg})") from None
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a JSON object, got {type(entry).__name__}")
        _unknown(entry, FIELDS, where)
        if not isinstance(entry.get("prompt"), str) or not entry["prompt"].strip():
            raise ConfigError(f"{where}: 'prompt' must be a non-empty string")
        prompts.append(entry["prompt"])
        scenes.append(_object_attributes(entry["objects"], where) if "objects" in entry else None)
    if not prompts:
        raise ConfigError(f"prompt file {path} has no prompts")
    if any(scene is None for scene in scenes):
        return prompts, None
    return prompts, _attribute_arrays(scenes)
