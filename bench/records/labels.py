"""What a row's variant label means, read from the row alone.

A run writes its label (`fast`, `fast+triton`) and the settings its variant stood for (`variant_settings`) when it
is recorded. Readers (leaderboard, report) take both from the row: a later change to a variant's definition, or a
table built on a machine that would choose other settings, never relabels an old row. A row written before these
columns existed, and not stamped since (scripts/stamp_rows.py), is shown with every setting spelled out.
"""
from __future__ import annotations

import json

AXES = ("pipeline", "precision", "channels_last", "compile", "norm_kernel")  # a variant's settings, as row columns


def token(axis: str, value: str) -> str:
    if axis == "channels_last":
        return "channels-last" if value == "True" else "nchw"
    if axis == "compile":
        return f"compile={value}"
    if axis == "norm_kernel":
        return "triton" if value == "triton" else f"norm={value}"
    return value  # a pipeline or a precision names itself


def make_label(variant: str, defined: dict[str, str] | None, actual: dict[str, str]) -> str:
    """The variant's name plus each setting that differs from what it defines (`fast+triton`); every setting in
    brackets where nothing is defined (`custom[device,bf16,...]`)."""
    if defined is None:
        return f"{variant}[{','.join(token(a, actual[a]) for a in AXES)}]"
    return variant + "".join(f"+{token(a, actual[a])}" for a in AXES if actual[a] != defined[a])


def _cell(row: dict, name: str) -> str:
    value = row.get(name)
    return "" if value is None or str(value) == "nan" else str(value).strip()


def row_label(row: dict) -> str:
    """The label the row was written with; for an unstamped row, its variant with every setting spelled out."""
    if _cell(row, "label"):
        return _cell(row, "label")
    name = _cell(row, "variant") or "?"
    actual = {a: _cell(row, a) for a in AXES}
    if any(not v for v in actual.values()):
        return name  # an early row without the settings columns
    return make_label(name, None, actual)


def row_settings(row: dict) -> dict[str, str] | None:
    """The settings the row's variant stood for when it ran (None when the row does not say)."""
    try:
        value = json.loads(_cell(row, "variant_settings") or "null")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
