"""How the committed fixtures in this folder were made (kept so that they can be made again).

    python tests/data/compare/make_fixtures.py RUN_A/results.json RUN_B/results.json

RUN_A and RUN_B are two real runs of tests/planted/suite.yaml on the same machine, one after the
other (BENCH_PLANTED_SLOWDOWN unset). They are trimmed (no collectors, 30 step times) and written:
  base.json          RUN_A
  same.json          RUN_B: an A/A pair with base.json
  slower.json        RUN_B with case 'sgd' 12% slower (every window's throughput times 0.88)
  other_env.json     RUN_B measured "on" torch 2.15.0 and another CPU model
  disjoint.json      RUN_A with every case id renamed: no case in common with base.json
  truncated.json     the first half of base.json's text
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def trim(doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc.pop("scaling", None)
    doc["run"]["argv"] = ["bench", "run", "tests/planted/suite.yaml"]
    for key in ("hostname", "platform"):
        doc["environment"][key] = "fixture-host" if key == "hostname" else "Linux"
    for case in doc["cases"]:
        case["collectors"] = {}
        case["log"] = None
        samples = case["samples"]
        samples["step_time_ms"] = samples["step_time_ms"][:30]
    return doc


def write(name: str, doc: dict[str, Any]) -> None:
    (HERE / name).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


def main(a_path: str, b_path: str) -> None:
    a = trim(json.loads(Path(a_path).read_text()))
    b = trim(json.loads(Path(b_path).read_text()))
    write("base.json", a)
    write("same.json", b)
    slower = copy.deepcopy(b)
    for case in slower["cases"]:
        if case["id"] == "sgd":
            thr = case["samples"]["window_throughput"] = [v * 0.88 for v in case["samples"]["window_throughput"]]
            case["samples"]["window_s"] = [s / 0.88 for s in case["samples"]["window_s"]]
            m = case["metrics"]["throughput"]
            m["median"], m["mean"] = m["median"] * 0.88, sum(thr) / len(thr)
            m["ci95"] = [v * 0.88 for v in m["ci95"]]
    write("slower.json", slower)
    other = copy.deepcopy(b)
    other["environment"].update(torch="2.15.0", cpu_model="AMD EPYC 9654")
    write("other_env.json", other)
    disjoint = copy.deepcopy(a)
    for case in disjoint["cases"]:
        case["id"] = "renamed-" + case["id"]
    write("disjoint.json", disjoint)
    text = (HERE / "base.json").read_text()
    (HERE / "truncated.json").write_text(text[: len(text) // 2], encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:3])
