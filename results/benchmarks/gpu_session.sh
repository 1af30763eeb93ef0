#!/bin/bash
# The prepared device session of 2026-11-27 (issue 11, issue 15; the supernet step for issue 14): run from the repository
# root on a CUDA machine with no network, with .whl/ holding the cellblock wheel
# (`pip wheel --no-deps -w .whl .`) and optuna 5.0.0, alembic, colorlog, mako, sqlalchemy,
# plotly wheels. First call: GT_ARGS as below; second call: `--npz-trials 0 ...` and no
# pytest or latency tables (see gpu_throughput.md).
GT_ARGS=${GT_ARGS:---npz-trials 12 --digits-trials 12 --resnet-repeats 2}
T0=$(date +%s)
el() { echo "[+$(( $(date +%s) - T0 ))s] $*"; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 CELLBLOCK_LOCK_DIR=/tmp/cb-locks
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/lt
# -P: import the installed wheel, not the checkout's cellblock/ (which lacks the plugin folders)
python3 -P -c "import sys, torch, optuna, cellblock.strategies; print(sys.version.split()[0], torch.__version__, torch.version.cuda, torch.cuda.get_device_name(), 'optuna', optuna.__version__)" || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
el "pytest (CUDA paths)"
timeout 150 python3 -P -m pytest -q -p no:cacheprovider tests/evaluators/test_cuda_graph.py tests/evaluators/test_training.py tests/cellblock/test_devices.py tests/cellblock/test_device_lock.py 2>&1 | tee "$OUT/pytest_cuda.log" | tail -25
el "gpu_throughput"
# shellcheck disable=SC2086
timeout 300 python3 results/benchmarks/gpu_throughput.py $GT_ARGS --out "$OUT/gpu_throughput.md" 2>&1 | tee "$OUT/gpu_throughput.log" | grep -v '^|' | tail -40
el "supernet on cuda (issue 14): the protocol's seed 0 at 16 epochs, timed there"
# SN_DEVICE=cpu SN_EPOCHS=1 SN_SAMPLES=4 SN_SEEDS=2 runs the same two commands as a dry run
SN_DEVICE=${SN_DEVICE:-cuda}; SN_EPOCHS=${SN_EPOCHS:-16}; SN_SAMPLES=${SN_SAMPLES:-40}; SN_SEEDS=${SN_SEEDS:-3}
left=$(( 540 - $(date +%s) + T0 ))
if [ $left -lt 60 ]; then el "no time left for the supernet"; else
  rm -rf /tmp/sn && mkdir -p /tmp/sn "$OUT/supernet_rank"
  timeout $(( left < 200 ? left : 200 )) sh -c "python3 -P -m cellblock supernet train --space blocks --space-arg shortcut=shared \
      --dataset digits --val-fraction 0.4 --epochs $SN_EPOCHS --batch-size 32 --seed 0 --device $SN_DEVICE --out /tmp/sn/none-s0.pt \
    && python3 -P -m cellblock supernet rank --supernet /tmp/sn/none-s0.pt --samples $SN_SAMPLES --epochs 8 --batch-size 64 \
      --seeds $SN_SEEDS --out $OUT/supernet_rank --device $SN_DEVICE" > "$OUT/supernet.log" 2>&1
  grep -v '^\[' "$OUT/supernet.log" | tail -14
  el "done supernet"
fi
el "latency tables on cuda"
for c in nb201 blocks8; do
  left=$(( 540 - $(date +%s) + T0 )); [ $left -lt 30 ] && { el "no time left for $c"; continue; }
  timeout $(( left < 100 ? left : 100 )) python3 results/benchmarks/latency_tables.py --config $c --runtime torch --device cuda --clock wall --samples 100 --dir /tmp/lt --results "$OUT/latency_cuda.jsonl" 2>&1 | tail -2
  el "done $c"
done
el end
