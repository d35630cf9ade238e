"""`--help` text for every config key, generated from the config tree: each field's default and the comment on its
line in bench/core/config.py, so a new key is documented where it is declared (tests/test_config_help.py fails on a
field without one)."""
from __future__ import annotations

import inspect
import io
import tokenize
from dataclasses import MISSING, fields, is_dataclass

from bench.core.config import RunConfig


def field_comments(cls) -> dict[str, str]:
    """{field name: the comment that ends its line} of a dataclass, read from its source."""
    out: dict[str, str] = {}
    line_field: dict[int, str] = {}
    source = inspect.getsource(cls)
    for f in fields(cls):
        for i, line in enumerate(source.splitlines(), 1):
            if line.strip().startswith(f"{f.name}:"):
                line_field[i] = f.name
                break
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT and tok.start[0] in line_field:
            out[line_field[tok.start[0]]] = tok.string.lstrip("#").strip()
    return out


def _default(f):
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else None


def config_keys(cls=RunConfig, prefix: str = "") -> list[tuple[str, object, str]]:
    """(dotted key, default, doc) for every leaf of the config tree, in declaration order."""
    docs, out = field_comments(cls), []
    for f in fields(cls):
        value = _default(f)
        if is_dataclass(value):
            out += config_keys(type(value), f"{prefix}{f.name}.")
        else:
            out.append((prefix + f.name, value, docs.get(f.name, "")))
    return out


NOT_OVERRIDABLE = ("preset", "variant", "profile")  # chosen by options; recorded in the row


def keys_epilog() -> str:
    """The config keys as `--help` lists them: `--section.key=DEFAULT  doc`."""
    lines = ["config keys (--key=value; a bare leaf name such as --epochs=5 works where unambiguous; defaults are the",
             "schema's, a recipe or variant sets its own: `python -m bench show-config --preset=...` prints them):"]
    for key, default, doc in config_keys():
        if key in NOT_OVERRIDABLE:
            continue
        value = str(default).lower() if isinstance(default, bool) else default
        lines.append(f"  --{key}={value}" + (f"  {doc}" if doc else ""))
    return "\n".join(lines)
