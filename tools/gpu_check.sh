#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run of under ten minutes on a 16-core machine:
#   1. build in place (Cython and a C compiler; libjpeg-turbo and libspng where found, see setup.py);
#   2. the CUDA tests (tests/test_gpu.py), the stand-in device tests, and the examples' training
#      tests, which train on the GPU when there is one (torch; JAX where it has a GPU backend);
#   3. benchmarks/bench_gpu.py: the pinned ring's bandwidth against a raw pinned copy, and a
#      loader-fed training step against a GPU-resident batch (the default convnet, and one four
#      times as wide, which the loader should outpace);
#   4. fastload bench --quick (fastload and torch's DataLoader): throughput against threads from
#      one to every core, with the decode-only limit.
# Every step's log, and the bench's JSON, table and plots, go to OUT (default ./gpu-check); a step
# that fails is reported and the next one still runs. The exit status is the number of failed steps.
#
#     tools/gpu_check.sh [OUT]
#
# A machine without libjpeg-turbo's headers builds the Pillow route; to measure the linked decoder
# there, unpack Debian's libjpeg62-turbo(-dev) and libspng0/libspng-dev (dpkg -x) into a prefix and set
# FASTLOAD_JPEG_PREFIX / FASTLOAD_PNG_PREFIX to it (and LD_LIBRARY_PATH to its lib/x86_64-linux-gnu).
set -uo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-gpu-check}")
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # JAX and torch share the GPU in one test process
failed=0

step() {   # step NAME SECONDS COMMAND...: run with a time limit, log to OUT/NAME.log
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*"
    local t0=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$out/$name.log"
    echo "== $name: exit $rc after $((SECONDS - t0)) s"
    [ "$rc" -eq 0 ] || failed=$((failed + 1))
    return "$rc"
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; nproc; "$py" --version; } \
    >"$out/machine.txt" 2>&1
cat "$out/machine.txt"
step build 240 "$py" setup.py build_ext --inplace -j "$(nproc)" || exit 1
step features 60 "$py" -c "import fastload, json, torch; print(json.dumps(fastload.features(), indent=1)); \
print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
step tests 300 "$py" -m pytest -q -p no:cacheprovider -rs tests/test_gpu.py tests/test_device.py \
    tests/test_examples.py -k "gpu or device or cuda or train_torch or train_jax"
step bench_gpu 240 "$py" benchmarks/bench_gpu.py --runs 5
step bench_gpu_wide 240 "$py" benchmarks/bench_gpu.py --runs 3 --width 4   # a model slower than the feed
step bench 420 "$py" -m fastload bench --quick --contenders fastload,torch-2 --no-envs --out "$out/bench"
echo "gpu_check: $failed step(s) failed; logs in $out"
exit "$failed"
