"""Writes docs/configuration.md: every field of t2ijax/defaults.py (which configs/base.py
re-exports) with its default, the values it accepts and its comment there.

  python -m t2ijax.config_reference > docs/configuration.md

Defaults come from `defaults.get_config()`, allowed names from t2ijax/registry.py (through
t2ijax.config), comments and the order of fields from defaults.py's source. tests/test_docs.py
checks the committed file is current.
"""
import ast
import inspect
import io
import tokenize

from absl import app

from t2ijax import defaults as base

HEADER = """# Configuration reference

Generated from `t2ijax/defaults.py` by `python -m t2ijax.config_reference > docs/configuration.md`;
do not edit by hand. Every config starts from `configs/base.py` (which re-exports those defaults)
and overrides some of these fields (in its `get_config()`, or on the command line as
`--config.<section>.<field>=value`). A field that is not listed here, a value of the wrong type and
a name that is not allowed are rejected before any compute (`t2ijax/config.py`). Allowed names come
from `t2ijax/registry.py`, where each is declared once and the implementing modules register
against it, so they are the ones the code accepts today.
"""


def _comments(source: str) -> tuple[dict[int, str], set[int]]:
    """Line -> its comment's text, and the lines that hold code."""
    comments, code = {}, set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
        elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                                tokenize.ENDMARKER):
            code.update(range(token.start[0], token.end[0] + 1))
    return comments, code


def _comment_after(line: int, comments: dict[int, str], code: set[int]) -> str:
    """The comment on `line` and the comment-only lines right below it that continue it."""
    parts = [comments[line]] if line in comments else []
    line += 1
    while parts and line in comments and line not in code:
        parts.append(comments[line])
        line += 1
    return " ".join(parts)


def _comment_before(line: int, comments: dict[int, str], code: set[int]) -> str:
    """The block of comment-only lines right above `line`."""
    parts = []
    line -= 1
    while line in comments and line not in code:
        parts.insert(0, comments[line])
        line -= 1
    return " ".join(parts)


def documented_fields() -> tuple[dict[str, str], dict[str, str]]:
    """(section -> its comment, dotted field -> its comment), both in base.py's order; top-level
    fields are in the section ""."""
    source = inspect.getsource(base)
    comments, code = _comments(source)
    function = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef) and n.name == "get_config")
    sections, fields = {"": ""}, {}
    for statement in function.body:
        if not (isinstance(statement, ast.Assign) and isinstance(statement.targets[0], ast.Attribute)):
            continue
        name, value = statement.targets[0].attr, statement.value
        if not (isinstance(value, ast.Call) and getattr(value.func, "id", None) == "dict"):
            fields[name] = (_comment_after(statement.end_lineno, comments, code)
                            or _comment_before(statement.lineno, comments, code))
            continue
        note = _comment_before(statement.lineno, comments, code)
        ends = [kw.value.end_lineno for kw in value.keywords]
        for keyword, end in zip(value.keywords, ends):
            # On a dict written on one line, the line's comment is about the section.
            fields[f"{name}.{keyword.arg}"] = "" if ends.count(end) > 1 else _comment_after(end, comments, code)
        if len(set(ends)) < len(ends):
            note = " ".join(filter(None, [note, _comment_after(statement.end_lineno, comments, code)]))
        sections[name] = note
    return sections, fields


def flat_defaults(config, prefix: str = "") -> dict:
    """Every leaf of `config` (sharding_rules too) as dotted name -> default."""
    out = {}
    for key, value in config.items():
        if hasattr(value, "items"):
            out.update(flat_defaults(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _allowed(name: str, default, choices: dict[str, list[str]], metrics: tuple[str, ...]) -> str:
    if name in choices:
        return ", ".join(f"`{c}`" for c in choices[name])
    if name == "eval.metrics":
        return "a tuple of: " + ", ".join(f"`{m}`" for m in metrics)
    if name.startswith("sharding_rules."):
        return "a tuple of mesh axes: `data`, `fsdp`, `tensor`"
    return type(default).__name__


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    from t2ijax.config import allowed_names
    from t2ijax.metrics.evaluation import METRICS

    sections, comments = documented_fields()
    defaults = flat_defaults(base.get_config())
    order = list(comments) + sorted(set(defaults) - set(comments))  # fields added another way go last
    choices = allowed_names()
    lines = [HEADER]
    for section, note in sections.items():
        names = [n for n in order if n in defaults and (n.rpartition(".")[0] == section
                                                        or (not section and "." not in n))]
        if not names:
            continue
        lines += [f"## `{section}`" if section else "## Top level", ""]
        if note:
            lines += [note, ""]
        lines += ["| field | default | allowed | what it is |", "|---|---|---|---|"]
        for name in names:
            lines.append(f"| `{name}` | `{_cell(repr(defaults[name]))}` | "
                         f"{_cell(_allowed(name, defaults[name], choices, METRICS))} | {_cell(comments.get(name, ''))} |")
        lines.append("")
    return "\n".join(lines)


def main(argv):
    del argv
    print(render(), end="")


if __name__ == "__main__":
    app.run(main)
