#!/usr/bin/env bash
# The GPU checks in one script, for a machine with a CUDA GPU and torch already installed:
# the CUDA-marked tests, `drsn-stream bench --device cuda`, tools/gpu_probe.py (where the GPU time
# goes), the pipeline benchmark on the GPU, and issue 17's streams per host (up to 10,240, ingest in
# 8 processes); STEPS="streams17 compile" (say) runs only those after the machine's facts.
# Everything it prints also lands under $OUT (default runs/gpu). Optional: .whl/ (wheels of
# packages the machine lacks, installed into /tmp/site) and DRSN_DATA (the folder holding cwru/)
# for the tests that need real recordings.
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
# STEPS picks the steps after "machine" (their timeouts add up to more than one 10-minute run)
STEPS=" ${STEPS:-bench tests probe pipeline streams17} "
want() { [[ "$STEPS" == *" $1 "* ]]; }
step machine
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv 2>&1 | tee "$OUT/gpu.txt"
python3 -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__, torch.cuda.get_device_name(0))"
# which of the monitor's CPU paths run here: compiled (numba) or numpy (slower, the same results)
python3 -c "from drsn_stream.dsp import bank_jit; from drsn_stream.dsp.normalize import warm
from drsn_stream.monitor import decision, levels_jit
print('compiled: decisions', decision.warm() or decision.why_not(), '| health', levels_jit.warm() or levels_jit.why_not(),
      '| z-score', warm(), '| window bank', bank_jit.warm())"
if want bench; then
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
fi
if want tests; then
step tests
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_engine.py tests/test_pipeline.py -k "cuda or gpu or runner" 2>&1 | tail -15
fi
if want probe; then
step probe
timeout 120 python3 tools/gpu_probe.py --batches 256,1024 | tee "$OUT/probe.jsonl"
fi
if want pipeline; then
step pipeline
timeout 100 python3 tools/bench_pipeline.py --device cuda --streams "${PIPE_STREAMS:-256,512,1024}" --seconds 5 --all 2>&1 \
    | tee "$OUT/pipeline_cuda.txt"
fi
# issue 17: one host holds >= 10,000 live 12 kHz streams at p99 <= 50 ms (ingest in 8 processes
# sharded by stream id against one ingest thread; 10,240 streams (240,000 frames/s) from 8 publisher
# processes, as one simulates some 40,000 channels/s; then the same in 16-channel frames)
if want streams17; then
step "streams (issue 17)"
# the monitor process's own limit after ingest on this host's CPU, whatever the GPU (one interpreter lock)
timeout 30 python3 tools/bench_stages.py --seconds 5 2>&1 | tee "$OUT/stages17.txt"
timeout 30 python3 tools/bench_stages.py --seconds 5 --normalized 2>&1 | tee -a "$OUT/stages17.txt"
timeout 30 python3 tools/bench_stages.py --seconds 5 --normalized --catch-up 0 2>&1 | tee -a "$OUT/stages17.txt"
timeout 150 python3 tools/bench_pipeline.py --device cuda --streams "${STREAMS17:-2048,4096}" --ingest-procs 1,8 \
    --publishers 2 --seconds 8 --all --p99-ms 50 2>&1 | tee "$OUT/pipeline17.txt"
timeout 150 python3 tools/bench_pipeline.py --device cuda --streams "${STREAMS17_BIG:-10240}" --ingest-procs 8 \
    --publishers "${PUBLISHERS17:-8}" --seconds 8 --all --p99-ms 50 2>&1 | tee "$OUT/pipeline17_big.txt"
timeout 120 python3 tools/bench_pipeline.py --device cuda --streams "${CHANNELS17:-4096,10240}" --channels 16 \
    --ingest-procs 8 --publishers "${PUBLISHERS17:-8}" --seconds 8 --all --p99-ms 50 2>&1 | tee "$OUT/pipeline17_16ch.txt"
fi
if [ -n "${WITH_COMPILE:-}" ] || want compile; then
    step compile
    timeout 150 python3 tools/gpu_probe.py --batches 256 --compile 2>&1 | grep compile16 | tee "$OUT/compile.jsonl"
fi
step done
