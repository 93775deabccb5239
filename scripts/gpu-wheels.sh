#!/usr/bin/env bash
# Fetch, here, the wheels of bench's pure-Python dependencies that the lent GPU machine lacks
# (it has torch, torchvision, pandas, scipy, rich, pyyaml, jinja2, psutil, nvidia-ml-py and pytest,
# but no package index), into .whl/ (git-ignored), for its Python (3.12 unless told otherwise):
#   bash scripts/gpu-wheels.sh [PYTHON_VERSION]
# scripts/gpu-smoke.sh installs them from there when the folder travels with the tree (carry .whl).
set -euo pipefail
cd "$(dirname "$0")/.."
pyver="${1:-3.12}"
# The versions this project is tested with here; --no-deps, so every package it needs is named.
packages=(
  pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2
  typing-extensions==4.15.0
  plotly==7.1.0 narwhals==2.29.0
  jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==0.30.0 attrs==25.4.0
  ruptures==1.1.10
  py-spy==0.4.3
  # the GPU trace analysis through HTA (bench/trace_analysis.py); without them bench computes it itself
  holistictraceanalysis==0.5.0 networkx==3.6.1 pydot==4.0.1 pyparsing==3.3.2
)
rm -rf .whl
mkdir -p .whl
platforms=()
for n in 39 35 34 31 28 27 24 17 12 5; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" --implementation cp \
  "${platforms[@]}" -d .whl "${packages[@]}"
ls -1 .whl
du -sh .whl
