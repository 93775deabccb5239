"""Short labels for parameter values, shared by the report, the paired effects and the terminal:
``{name: sgd, kwargs: {momentum: 0.9}}`` reads ``sgd momentum=0.9`` next to plain ``sgd``."""

from __future__ import annotations

import json
from typing import Any


def fmt_value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={fmt_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def axis_labels(values: list[Any]) -> list[str]:
    """Short labels for one parameter across cases. A configuration object (model, optimizer,
    data) is named by its ``name`` (or ``import``) plus only the fields that differ between cases,
    so ``{name: sgd, kwargs: {momentum: 0.9}}`` reads ``sgd momentum=0.9`` next to plain ``sgd``."""
    unique: dict[str, Any] = {}
    for v in values:
        unique.setdefault(_canonical(v), v)
    objects = list(unique.values())
    if not all(isinstance(v, dict) for v in objects):
        by_key = {c: fmt_value(v) for c, v in unique.items()}
    else:
        fields: list[str] = []
        for obj in objects:
            fields.extend(k for k in obj if k not in fields)
        differing = [k for k in fields if len({_canonical(o.get(k)) for o in objects}) > 1]
        by_key = {}
        for c, obj in unique.items():
            head = obj.get("name") or obj.get("import")
            parts = [str(head)] if head else []
            for k in differing:
                v = obj.get(k)
                if k in ("name", "import") or v in (None, {}, []):
                    continue
                if k == "kwargs" and isinstance(v, dict):
                    parts.extend(f"{kk}={fmt_value(vv)}" for kk, vv in v.items())
                else:
                    parts.append(f"{k}={fmt_value(v)}")
            by_key[c] = " ".join(parts) or "default"
    return [by_key[_canonical(v)] for v in values]
