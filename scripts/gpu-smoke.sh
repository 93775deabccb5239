#!/usr/bin/env bash
# One-shot GPU check, prepared for a short lease on a GPU machine that has torch but no package
# index. Here, first: `bash scripts/gpu-wheels.sh` (the missing pure-Python dependencies, into
# .whl/), then on the GPU machine, with .whl carried along:
#   bash scripts/gpu-smoke.sh [OUT_DIR]
# It runs suites/gpu-smoke.yaml (cuda, dp at world_size 1, ddp with nccl at world_size 1, the CNN)
# and suites/gpu-modern.yaml (bf16 and fp16 autocast, torch.compile, fsdp with nccl), prints each
# case's key fields, then the tests marked `cuda` (tests/test_cuda.py: every collector and the
# training axes on a real GPU), after a short `bench aa` of the cuda case (paired halves on a GPU).
# Exit status: the suites', or the tests' if the suites passed.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-/tmp}/gpu-smoke}"
export PYTHONUNBUFFERED=1
# The source tree itself, not an install: an editable install would need the build backend
# from the index. Case processes and torchrun's ranks inherit PYTHONPATH.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 3
  export PYTHONPATH="/tmp/site:$PYTHONPATH" PATH="/tmp/site/bin:$PATH"
fi
if ! python3 -c "import pydantic, rich, yaml, plotly, jinja2, psutil, scipy, jsonschema, ruptures, pynvml, torch"; then
  echo "gpu-smoke: dependencies missing: run scripts/gpu-wheels.sh on a machine with an index, carry .whl" >&2
  exit 3
fi
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'devices', torch.cuda.device_count())"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
command -v py-spy || echo "py-spy: not found"
python3 -m bench run suites/gpu-smoke.yaml --out "$out" --quiet
status=$?
python3 -m bench run suites/gpu-modern.yaml --out "$out-modern" --quiet --no-report
modern=$?
[ "$status" -eq 0 ] && status=$modern
for results in "$out/results.json" "$out-modern/results.json"; do
if [ -f "$results" ]; then
  python3 - "$results" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
print("environment:", {k: doc["environment"].get(k) for k in ("torch", "cuda", "gpus")})
for c in doc["cases"]:
    m = c.get("metrics") or {}
    thr = m.get("throughput") or {}
    col = c.get("collectors") or {}
    nvml = (col.get("nvml") or {}).get("summary") or {}
    flops = col.get("flops") or {}
    print(c["id"], c["status"], c.get("error") or "", "device=%s" % c.get("device"), "backend=%s" % c.get("backend"),
          "thr=%.1f" % thr.get("median", 0), "ci=%s" % thr.get("ci_rel_half_width"),
          "cuda_alloc_mb=%s" % m.get("cuda_peak_allocated_mb"),
          "util_mean=%s power_w=%s J/sample=%s" % (nvml.get("util_mean"), nvml.get("power_mean_w"),
                                                   nvml.get("energy_per_sample_j")),
          "mfu=%s (%s)" % (flops.get("mfu"), flops.get("peak_source")),
          "precision=%s compile_s=%s graph_breaks=%s" % (c["params"].get("precision"), m.get("compile_s"),
                                                          m.get("graph_breaks")),
          "collector errors=%s" % {k: v.get("error") for k, v in col.items() if (v or {}).get("error")})
    an = col.get("anatomy") or {}
    ph = an.get("phases") or {}
    if ph:
        print("  anatomy (%s, %s steps, %.2f s): step %.2f ms (measured %.2f): " % (
              an.get("timing"), an.get("steps"), an.get("cost_s") or 0, ph["step_ms"], an.get("measured_step_ms") or 0)
              + " ".join("%s %.2f" % (k[:-3], ph[k]) for k in ("data_ms", "forward_ms", "loss_ms", "backward_ms",
                                                              "optimizer_ms", "other_ms"))
              + " comm %s exposed %s slowest rank %s" % (ph.get("communication_ms"), ph.get("exposed_communication_ms"),
                                                         an.get("slowest_rank")))
    elif an:
        print("  anatomy:", an.get("error"))
    mem = (col.get("memory_breakdown") or {})
    print("  memory_breakdown:", mem.get("categories"), mem.get("error") or "")
    ta = col.get("trace_analysis")
    for r in (ta or {}).get("ranks") or []:
        top = (r.get("kernels") or [{}])[0]
        print("  trace analysis (%s) rank %s: compute %.0f%% non-compute %.0f%% idle %.0f%% of %.0f us; idle waits "
              "host/kernel/other %.0f/%.0f/%.0f us; overlap %s%%; top kernel %s (%s, %.0f us x%s)" % (
              ta["source"], r["rank"], r["compute_pct"], r["non_compute_pct"], r["idle_pct"], r["span_us"],
              r["idle_host_wait_us"], r["idle_kernel_wait_us"], r["idle_other_us"], r["comm_comp_overlap_pct"],
              top.get("name", "")[:60], top.get("type"), top.get("total_us", 0), top.get("count")))
    if ta and not ta.get("ranks"):
        print("  trace analysis:", ta.get("error"), ta.get("notes"))
PY
fi
done
# bench ab on the GPU: the same code on both sides (an A/A), paired halves on CUDA; a short budget
# (3-4 launches of 5 pairs, at most 30 s).
python3 -m bench aa suites/gpu-smoke.yaml --only cuda --out "$out-aa" --pairs-per-launch 5 --min-launches 3 \
  --max-launches 4 --max-time 30 --quiet
echo "bench aa exit: $?"
[ -f "$out-aa/ab.json" ] && python3 -c "import json,sys; d=json.load(open(sys.argv[1])); [print('aa', c['id'], c['verdict'], c['pairs'], c['message']) for c in d['cases']]" "$out-aa/ab.json"
python3 -m pytest -q -m cuda -p no:cacheprovider tests
tests=$?
[ "$status" -ne 0 ] && exit "$status"
exit "$tests"
