#!/usr/bin/env bash
# The paper-sized convergence subset (suites/beyond-topk-gpu-subset.yaml: 9 trials, ~12 min at
# 15% of an H100/H200's bf16 dense peak) on one GPU, as one prepared command for a machine
# that has a CUDA build of torch but cannot reach a package registry.
#
# Here, before: the wheels pipenem needs beyond such a machine's image (pydantic and what it
# needs; pyroute2 for the testbed modules), for its Python (3.12 on the workplace's H200):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 -d .whl pydantic pydantic-core annotated-types typing-inspection pyroute2
# There (device tool): run(command="bash docs/experiments/gpu_paper_subset.sh", carry=[".whl"], timeout_s=600)
# Results: $OUT/trials.parquet, steps.parquet (resumable: run it again to finish a cut-short run);
# `pipenem report DIR` makes the report here (the device tool brings back at most 8 files).
set -uo pipefail
out=${OUT:-results/gpu-subset}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
t0=$(date +%s)
# leave time for the tables and the report inside a 600 s call
timeout "${LIMIT_S:-500}" python3 -m pipenem.main run suites/beyond-topk-gpu-subset.yaml --out "$out" --jobs 3
echo "run exit $? after $(( $(date +%s) - t0 )) s"
python3 - "$out" <<'PY'
import sys, pandas as pd
t = pd.read_parquet(f"{sys.argv[1]}/trials.parquet")
print(t[["compressor", "rate", "seed", "status", "eval_loss", "initial_loss", "wall_s", "device", "dtype"]].to_string())
PY
