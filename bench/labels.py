"""Short labels for parameter values, shared by the report, the paired effects and the terminal:
``{name: sgd, kwargs: {momentum: 0.9}}`` reads ``sgd momentum=0.9`` next to plain ``sgd``."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from bench import ids


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
    data) is named by its ``label`` where the suite gives one, else as case ids name it (by the
    rule of ``bench.ids``): its ``name`` (or ``import``) and only the options that differ between
    values of that name, so ``{name: sgd, kwargs: {momentum: 0.9}}`` reads ``sgd momentum=0.9``
    next to plain ``sgd``."""
    unique: dict[str, Any] = {}
    for v in values:
        unique.setdefault(_canonical(v), v)
    mappings = {c: v for c, v in unique.items() if isinstance(v, dict)}
    flags = {c: v for c, v in unique.items() if isinstance(v, bool)}
    if not mappings or len(mappings) + len(flags) < len(unique):
        by_key = {c: fmt_value(v) for c, v in unique.items()}
    else:
        # A switch written false or as options (compile): false reads "no", an enabled value "yes"
        # or the options that tell it apart from the other enabled values.
        empty = "yes" if flags else "default"
        texts = ids.mapping_labels([_id_parts(obj) for obj in mappings.values()], tidy=str)
        by_key = {c: text or empty for c, text in zip(mappings, texts, strict=True)}
        by_key.update((c, fmt_value(v)) for c, v in flags.items())
    return [by_key[_canonical(v)] for v in values]


def _id_parts(obj: dict[str, Any]) -> ids.IdParts:
    """A configuration as a results file stores it, with its ``kwargs`` as options of their own."""
    head = str(obj.get("name") or obj.get("import") or "")
    facets: list[ids.Facet] = []
    for key, value in obj.items():
        if key in ("name", "import", "label"):
            continue
        options = value.items() if key == "kwargs" and isinstance(value, dict) else [(key, value)]
        facets.extend(ids.facet(k, v, f"{k}={fmt_value(v)}", " ") for k, v in options if v not in (None, {}, []))
    if not head:
        # A mapping without a name (compile's options): a value alone would not say what it is.
        facets = [dataclasses.replace(f, alone=None) for f in facets]
    label = obj.get("label")
    return ids.IdParts(head, head, tuple(facets), str(label) if label else None)
