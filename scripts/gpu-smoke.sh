#!/usr/bin/env bash
# One-shot GPU check, prepared for a short lease on a GPU machine:
#   bash scripts/gpu-smoke.sh [OUT_DIR]
# Runs suites/gpu-smoke.yaml (cuda, dp at world_size 1, ddp with nccl at world_size 1, the CNN),
# the CUDA-marked tests, and prints the results table plus the key fields of each case.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-/tmp}/gpu-smoke}"
export PYTHONUNBUFFERED=1
# The GPU machine may lack the project's pure-Python dependencies; install them without touching torch.
python3 -c "import pydantic, rich, yaml, plotly, jinja2, psutil, scipy, jsonschema" 2>/dev/null \
  || python3 -m pip install -q --no-deps -e . 2>/dev/null
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 -m bench run suites/gpu-smoke.yaml --out "$out" --quiet
status=$?
python3 - "$out/results.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
print("environment:", {k: doc["environment"].get(k) for k in ("torch", "cuda", "gpus")})
for c in doc["cases"]:
    m = c.get("metrics") or {}
    thr = (m.get("throughput") or {})
    print(c["id"], c["status"], c.get("error") or "", "device=%s" % c.get("device"), "backend=%s" % c.get("backend"),
          "thr=%.1f" % thr.get("median", 0), "ci=%s" % thr.get("ci_rel_half_width"),
          "cuda_alloc_mb=%s" % m.get("cuda_peak_allocated_mb"),
          "collectors=%s" % {k: (v or {}).get("error") for k, v in (c.get("collectors") or {}).items()})
PY
python3 -m pytest -q -m cuda tests 2>&1 | tail -5
exit $status
