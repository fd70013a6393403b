"""docs/architecture.md's "Axes and registries" table says true things: each row's object is in the module it
names, has the kind it names (Registry, tuple, dict), and holds exactly the names the row lists, which for a
validated field are the names t2ijax/config.py accepts."""
import importlib
import os
import re

from t2ijax.config import allowed_names
from t2ijax.registry import Registry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINDS = {"Registry": Registry, "tuple": tuple, "dict": dict}


def _axis_rows() -> list[list[str]]:
    with open(os.path.join(REPO, "docs", "architecture.md")) as f:
        section = f.read().split("## Axes and registries", 1)[1].split("\n## ", 1)[0]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| `")]
    assert len(rows) > 15, "the table of axes is missing"
    return rows


def test_axes_table_matches_the_code():
    choices = allowed_names()
    for field_cell, defined_by, kind, names_cell in _axis_rows():
        field = re.match(r"`([\w.]+)`", field_cell).group(1)
        if kind == "derived":
            continue
        path, _, name = defined_by.strip("`").partition(": ")
        module = importlib.import_module(path.removesuffix(".py").removesuffix("/__init__").replace("/", "."))
        table = getattr(module, name)
        assert isinstance(table, KINDS[kind]), f"{field}: {path}'s {name} is a {type(table).__name__}, not a {kind}"
        names = table.names() if isinstance(table, Registry) else list(table)
        listed = re.findall(r"`([\w.]+)`", re.sub(r"\([^)]*\)", "", names_cell))  # asides in brackets are not names
        assert sorted(listed) == sorted(names), f"{field}: the table lists {listed}, {path}'s {name} has {names}"
        if field in choices:
            assert sorted(choices[field]) == sorted(names), f"{field}: config.py accepts {choices[field]}"
