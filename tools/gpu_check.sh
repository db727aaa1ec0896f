#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run inside a time budget (GPU_CHECK_SECONDS, default 540),
# most important first; a step is cut to the time left, and one that no longer fits is reported as
# skipped:
#   1. build in place (Cython and a C compiler), against the codecs in .gpu/root where
#      tools/gpu_prefix.sh put them (a machine without a package registry), else those found;
#   2. the CUDA tests (tests/test_gpu.py), the stand-in device tests, and the examples' training
#      tests, which train on the GPU when there is one (torch; JAX where it has a GPU backend);
#   3. benchmarks/bench_gpu.py: the pinned ring's bandwidth against a raw pinned copy, and a
#      loader-fed training step against a GPU-resident batch, with a model four times as wide (one
#      the loader outpaces: the case the step target is set for) and the default one;
#   4. fastload bench --quick (fastload and torch's DataLoader with a worker per core): throughput
#      against threads (1 to 4, then powers of two, and every core), with the decode-only limit.
# Everything goes to OUT (default ./gpu-check), in few files: checks.log (every step's output),
# summary.txt (each step's status), and the bench's JSON, table and plots under OUT/bench. A step
# that fails is reported and the next one still runs. The exit status is the number of failed or
# skipped steps.
#
#     tools/gpu_check.sh [OUT]
set -uo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-gpu-check}")
mkdir -p "$out"
log=$out/checks.log summary=$out/summary.txt
: >"$log"
: >"$summary"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # JAX and torch share the GPU in one test process
deadline=$((SECONDS + ${GPU_CHECK_SECONDS:-540}))
failed=0

if [ -d .gpu/root/usr/include ]; then
    codecs=$PWD/.gpu/root/usr
    export FASTLOAD_JPEG_PREFIX=$codecs FASTLOAD_PNG_PREFIX=$codecs FASTLOAD_DEFLATE_PREFIX=$codecs
    export LD_LIBRARY_PATH=$codecs/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi

step() {   # step NAME SECONDS COMMAND...: run with the smaller of SECONDS and the time left
    local name=$1 limit=$2
    shift 2
    local left=$((deadline - SECONDS - 5))
    if [ "$left" -lt 30 ]; then
        echo "$name: skipped, out of time" | tee -a "$summary"
        failed=$((failed + 1))
        return 1
    fi
    [ "$limit" -le "$left" ] || limit=$left
    echo "== $name (at most $limit s): $*" | tee -a "$log"
    local t0=$SECONDS from
    from=$(wc -l <"$log")
    timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
    local rc=$?
    tail -n +"$((from + 1))" "$log" | tail -n 25
    echo "$name: exit $rc after $((SECONDS - t0)) s" | tee -a "$summary" "$log"
    [ "$rc" -eq 0 ] || failed=$((failed + 1))
    return "$rc"
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; echo "cores: $(nproc)"; "$py" --version; } \
    2>&1 | tee -a "$log"
step build 180 "$py" setup.py build_ext --inplace -j "$(nproc)" || exit "$failed"
step features 60 "$py" -c "import fastload, json, torch; print(json.dumps(fastload.features(), indent=1)); \
print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
step tests 240 "$py" -m pytest -q -p no:cacheprovider -rs tests/test_gpu.py tests/test_device.py \
    tests/test_examples.py -k "gpu or device or cuda or train_torch or train_jax"
step bench_gpu_wide 150 "$py" benchmarks/bench_gpu.py --runs 3 --width 4   # a model slower than the feed
step bench_gpu 120 "$py" benchmarks/bench_gpu.py --runs 3
step bench 600 "$py" -m fastload bench --quick --contenders "fastload,torch-$(nproc)" --no-envs --out "$out/bench"
echo "gpu_check: $failed step(s) failed or skipped; output in $out" | tee -a "$summary"
exit "$failed"
