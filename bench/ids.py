"""Case ids a person can read, built from what varies across a suite.

An id joins, with ``-``, one part per case parameter whose value varies across the suite, in the
order of ``CaseParams``' fields. A scalar reads as itself or with a short prefix (``bs64``,
``lr0.01``); an unset value (``None``, an empty list) adds nothing. A mapping-valued parameter
(a model with ``kwargs``, an optimizer with options, a data loader) is described by ``IdParts``:
its name, and facets (its options) of which the id shows only those that vary between values of
the same name, as ``key=value``. Where exactly one varying option is a string in every such value,
its value alone names the case in place of the name: ``timm:create_model`` with ``model_name:
resnet18`` reads ``resnet18``. A ``label:`` replaces all of that. Ids are unique within a suite:
where two cases still read alike, the later one gets a suffix (``-2``) and a note that says so.
Nothing here knows a suite's keys; ``bench.suite`` describes its values with these parts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# Characters a part of an id keeps; anything else becomes "_", so an id is a safe file name and
# glob, and "-" only ever separates parts.
ID_CHARS = "._,=+"


@dataclass(frozen=True)
class Facet:
    """One option of a mapping-valued parameter, as the id may show it."""

    key: str
    canon: str                 # compared to tell values apart
    text: str                  # how it reads: "img_size=64", or a short form ("m0.9")
    alone: str | None = None   # the value by itself, where a string can name the case
    joiner: str = "-"          # "_" for the short forms ids have always used (sgd_m0.9)


@dataclass(frozen=True)
class IdParts:
    """What a mapping-valued parameter tells the id: a name, options, or the user's label."""

    head: str                  # its name in the id ("" for an unnamed mapping such as measure)
    group: str                 # values of one group (one name) are told apart by their facets
    facets: tuple[Facet, ...]
    label: str | None = None   # the user's label replaces everything else

    def facet(self, key: str) -> Facet | None:
        return next((f for f in self.facets if f.key == key), None)


def facet(key: str, value: Any, text: str | None = None, joiner: str = "-") -> Facet:
    """A facet whose text is ``key=value`` unless given; a non-empty string value may stand alone."""
    alone = value if isinstance(value, str) and value else None
    return Facet(key, canonical(value), text if text is not None else f"{key}={fmt(value)}", alone, joiner)


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def fmt(value: Any) -> str:
    """A value as the ``value`` of ``key=value``: numbers as printed (``0.9``, ``1e-05``), lists
    joined by commas, booleans as ``true`` or ``false``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(fmt(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}:{fmt(v)}" for k, v in sorted(value.items()))
    return str(value)


def short(value: Any) -> str:
    """A value after a short prefix (``m0.9``, ``bs64``), as ids have always read: a true flag
    adds nothing to its prefix (``nag``), a false one is ``0``."""
    if isinstance(value, bool):
        return "" if value else "0"
    if isinstance(value, (list, tuple)):
        return ",".join(short(v) for v in value)
    return fmt(value)


def clean(text: str) -> str:
    return "".join(c if c.isalnum() or c in ID_CHARS else "_" for c in text)


def mapping_labels(values: Sequence[IdParts], tidy: Callable[[str], str] = clean) -> list[str]:
    """The id part of each of a parameter's distinct values (all of one parameter); ``tidy``
    cleans each piece before the joiners go in."""
    groups: dict[str, list[int]] = {}
    for i, parts in enumerate(values):
        groups.setdefault(parts.group, []).append(i)
    out = [""] * len(values)
    for members in groups.values():
        group = [values[i] for i in members]
        keys = list(dict.fromkeys(f.key for parts in group for f in parts.facets))
        varying = [k for k in keys if len({_canon(parts, k) for parts in group}) > 1]
        # A value alone is unambiguous only where it is the one varying option that every value
        # of the group sets to a string: two such options would read alike side by side.
        naming = [k for k in varying if all((f := _set(parts, k)) is not None and f.alone for parts in group)]
        alone = naming[0] if len(naming) == 1 else None
        for i, parts in zip(members, group, strict=True):
            if parts.label is not None:
                out[i] = tidy(parts.label)
                continue
            named = _set(parts, alone) if alone is not None else None
            text = tidy((named.alone or "") if named is not None else parts.head)
            for key in varying:
                shown = _set(parts, key)
                if key == alone or shown is None:
                    continue
                text = f"{text}{shown.joiner}{tidy(shown.text)}" if text else tidy(shown.text)
            out[i] = text
    return out


def _set(parts: IdParts, key: str) -> Facet | None:
    """The facet of an option that is set: a null one is unset, as if absent."""
    found = parts.facet(key)
    return found if found is not None and found.canon != "null" else None


def _canon(parts: IdParts, key: str) -> str | None:
    found = _set(parts, key)
    return found.canon if found is not None else None


def unique(bases: Sequence[str]) -> list[tuple[str, str | None]]:
    """Each base id made unique in order: a base already taken gets the first free suffix
    (``-2``, ``-3``...) and a note saying so, so the same suite always gives the same ids."""
    used: set[str] = set()
    out: list[tuple[str, str | None]] = []
    for base in bases:
        case_id, n = base, 1
        while case_id in used:
            n += 1
            case_id = f"{base}-{n}"
        used.add(case_id)
        note = None
        if case_id != base:
            note = (f"its parameters read like those of the earlier case {base!r}, hence the suffix -{n} "
                    "(a label: on a model, optimizer or data value names it)")
        out.append((case_id, note))
    return out
