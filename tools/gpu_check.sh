#!/usr/bin/env bash
# The GPU checks in one script, for a machine with a CUDA GPU and torch already installed:
# the CUDA-marked tests, `drsn-stream bench --device cuda`, tools/gpu_probe.py (where the GPU time
# goes) and the pipeline benchmark on the GPU. Everything it prints also lands under $OUT (default
# runs/gpu). Optional: .whl/ (wheels of packages the machine lacks, installed into /tmp/site) and
# DRSN_DATA (the folder holding cwru/) for the tests that need real recordings.
set -u
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site:$PWD || exit 1
else
    export PYTHONPATH=$PWD
fi
step() { echo "=== $* ($(date +%T))"; }
step machine
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv 2>&1 | tee "$OUT/gpu.txt"
python3 -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__, torch.cuda.get_device_name(0))"
step bench
timeout 150 python3 -m drsn_stream bench --device cuda --batch-sizes "${BENCH_SIZES:-1,16,64,256,1024,4096}" \
    --seconds 1 --json > "$OUT/bench_cuda.json"; echo "rc=$?"
python3 - "$OUT/bench_cuda.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
print(d["device"], "fp16 agreement", d["fp16_agreement"], "naive", d["naive_wps"], "w/s", d["notes"])
for r in d["results"]:
    print(r)
EOF
step tests
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_engine.py tests/test_pipeline.py -k "cuda or gpu or runner" 2>&1 | tail -15
step probe
timeout 120 python3 tools/gpu_probe.py --batches 256,1024 | tee "$OUT/probe.jsonl"
step pipeline
timeout 100 python3 tools/bench_pipeline.py --device cuda --streams "${PIPE_STREAMS:-256,512,1024}" --seconds 5 --all 2>&1 \
    | tee "$OUT/pipeline_cuda.txt"
if [ -n "${WITH_COMPILE:-}" ]; then
    step compile
    timeout 150 python3 tools/gpu_probe.py --batches 256 --compile 2>&1 | grep compile16 | tee "$OUT/compile.jsonl"
fi
step done
