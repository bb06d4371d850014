#!/usr/bin/env bash
# The CUDA path, measured in one go (docs/gpu.md says how to bring it to a GPU machine):
# the `gpu` tests, `bench --provider cuda` over the zoo in fp32 and fp16 (batch sweep to
# 1024), `infer` with ResNet50 fp16 over 20,000 500x375 JPEGs with every core decoding,
# and the decode-only rate of all cores. Writes OUT/results.json, OUT/results.md,
# OUT/gpu_check.log and OUT/raw.tar.gz, whatever fails on the way.
#
#   benchmarks/gpu_check.sh OUT [SKELETONS]
#
# SKELETONS: the zoo packed by `gpu_check.py pack` (default .gpu/zoo). Environment:
# PYTHON (default python3), GPU_CHECK_BUDGET (seconds, default 450: every step is cut to
# what is left), GPU_CHECK_WORK (default /tmp/gpu-check), GPU_CHECK_PHOTOS (default 20000),
# GPU_CHECK_SWEEP and GPU_CHECK_SWEEP_SHORT (batch sizes: ResNet50, the others), and
# GPU_CHECK_DRY_RUN=1: the GPU sequence on the CPU provider, to rehearse it anywhere.
# Exit: 0 all steps passed on a GPU; 1 a step failed; 3 no NVIDIA GPU (the CPU-side checks
# ran); 4 a GPU but no CUDA session loads (the CPU-side checks ran, the reason is printed).
set -u
OUT=${1:?usage: gpu_check.sh OUT [SKELETONS]}
SKELETONS=${2:-.gpu/zoo}
PY=${PYTHON:-python3}
BUDGET=${GPU_CHECK_BUDGET:-450}
WORK=${GPU_CHECK_WORK:-/tmp/gpu-check}
PHOTOS=${GPU_CHECK_PHOTOS:-20000}
HELPER="$(dirname "$0")/gpu_check.py"
REPORT_RESERVE=20 # seconds kept for the report
SWEEP=${GPU_CHECK_SWEEP:-1,8,32,128,256,512,1024}  # ResNet50
SWEEP_SHORT=${GPU_CHECK_SWEEP_SHORT:-1,32,256,1024} # the others: the budget allows 4 sizes
PROVIDER=cuda
[[ ${GPU_CHECK_DRY_RUN:-0} == 1 ]] && PROVIDER=cpu

# PYTHONSAFEPATH: `python -m` must not put the checkout first on sys.path: its cnnbench/
# folder would shadow the installed package, whose stages the checkout keeps elsewhere.
export PYTHONUNBUFFERED=1 PYTHONSAFEPATH=1 TF_CPP_MIN_LOG_LEVEL=2
mkdir -p "$OUT" "$WORK/bench" "$WORK/models"
rm -f "$WORK"/steps.jsonl "$WORK"/bench/*.json "$WORK"/infer-*.json "$WORK"/decode.json
LOG="$OUT/gpu_check.log"
: >"$LOG"
FAILED=0

say() { echo "gpu_check [$SECONDS s] $*" | tee -a "$LOG"; }

# step NAME MAX_SECONDS CMD...: run CMD under `timeout`, cut to the budget left, print its
# output as it goes (and into the log), and record its status in steps.jsonl.
step() {
    local name=$1 cap=$2 left rc status start
    shift 2
    left=$((BUDGET - REPORT_RESERVE - SECONDS))
    ((cap > left)) && cap=$left
    if ((cap < 5)); then
        say "$name: skipped, out of time"
        echo "{\"step\": \"$name\", \"status\": \"skipped (out of time)\", \"seconds\": 0}" >>"$WORK/steps.jsonl"
        FAILED=1
        return 1
    fi
    say "$name: start (at most ${cap} s)"
    start=$SECONDS
    timeout -k 5 "$cap" "$@" 2>&1 | sed -u "s/^/  [$name] /" | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    case $rc in
    0) status=ok ;;
    124 | 137) status="timeout after ${cap} s" ;;
    *) status="failed (exit $rc)" ;;
    esac
    ((rc != 0)) && FAILED=1
    say "$name: $status in $((SECONDS - start)) s"
    echo "{\"step\": \"$name\", \"status\": \"$status\", \"seconds\": $((SECONDS - start))}" >>"$WORK/steps.jsonl"
    return "$rc"
}

finish() { # VERDICT EXIT_CODE
    $PY "$HELPER" report "$WORK" "$OUT" --verdict "$1" >>"$LOG" 2>&1 ||
        say "report: failed (see the log)"
    tar -czf "$OUT/raw.tar.gz" -C "$WORK" --exclude photos --exclude models --exclude '*.csv' . 2>/dev/null
    [[ -f "$OUT/results.md" ]] && cat "$OUT/results.md"
    echo "gpu_check: $1 (results in $OUT, ${SECONDS} s)"
    exit "$2"
}

# ORT finds CUDA and cuDNN through preload_dlls() beside its own site-packages; when it is
# installed elsewhere (pip --target), the nvidia wheels of this Python are put on the path.
NVIDIA_LIBS=$($PY -c "import glob, nvidia; print(':'.join(d for p in nvidia.__path__ for d in sorted(glob.glob(p + '/*/lib'))))" 2>/dev/null)
[[ -n $NVIDIA_LIBS ]] && export LD_LIBRARY_PATH="$NVIDIA_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

step imports 30 $PY -c "import cnnbench, cv2, click, numpy, onnx, onnxruntime, tqdm
print('cnnbench', cnnbench.__version__, '| onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers(), '| onnx', onnx.__version__, '| numpy', numpy.__version__, '| opencv', cv2.__version__)" ||
    finish "cnnbench or a dependency does not import: see the log" 1
step probe 60 $PY "$HELPER" probe "$WORK/probe.json"
PROBE=$?
CUDA=$($PY -c "import json; print(json.load(open('$WORK/probe.json'))['cuda'])" 2>/dev/null)

if ((PROBE != 0)) && [[ $PROVIDER == cuda ]]; then
    # No CUDA here: the CPU-side checks, short, then one line that says why it stopped.
    step models 120 $PY "$HELPER" unpack "$SKELETONS" "$WORK/models" --only simple_vgg-fp32
    step photos 60 $PY "$HELPER" photos "$WORK/photos" --count 200
    step tests 240 $PY -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_infer_runtime.py
    step bench-cpu 60 $PY -m cnnbench bench --model "$WORK/models/simple_vgg-fp32.onnx" --provider cpu \
        --batch-sizes 1,8 --duration 0.2 --max-seconds 2 --warmup 1 --no-peak --json "$WORK/bench/simple_vgg-fp32.json"
    step infer-cpu 60 $PY -m cnnbench infer "$WORK/models/simple_vgg-fp32.onnx" "$WORK/photos" --provider cpu \
        -o "$WORK/infer-simple_vgg-fp32-cpu.csv" --summary "$WORK/infer-simple_vgg-fp32-cpu.json" --no-progress
    step decode 30 $PY "$HELPER" decode "$WORK/photos" --size 64 --json "$WORK/decode.json"
    if ((PROBE == 3)); then
        finish "no NVIDIA GPU here: ran the CPU-side checks only ($CUDA)" 3
    fi
    finish "a GPU is here but no CUDA session loads: $CUDA" 4
fi

# A GPU: the figures that matter most first, so that a cut budget loses the least.
[[ $PROVIDER == cpu ]] && say "dry run: the GPU sequence on the CPU provider"
step models 90 $PY "$HELPER" unpack "$SKELETONS" "$WORK/models"
step photos 60 $PY "$HELPER" photos "$WORK/photos" --count "$PHOTOS"
step tests 90 $PY -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py
bench_one() { # STEM MAX_SECONDS BATCH_SIZES [bench options]
    local stem=$1 cap=$2 sizes=$3
    shift 3
    step "bench-$stem" "$cap" $PY -m cnnbench bench --model "$WORK/models/$stem.onnx" --provider $PROVIDER \
        --batch-sizes "$sizes" --warmup 3 --duration 0.1 --max-seconds 1 "$@" \
        --json "$WORK/bench/$stem.json"
}
bench_one resnet50-fp16 60 "$SWEEP"
step decode 30 $PY "$HELPER" decode "$WORK/photos" --size 224 --json "$WORK/decode.json"
for batch in 64 256; do
    step "infer-b$batch" 45 $PY -m cnnbench infer "$WORK/models/resnet50-fp16.onnx" "$WORK/photos" \
        --provider $PROVIDER --batch-size "$batch" -o "$WORK/infer-resnet50-fp16-b$batch.csv" \
        --summary "$WORK/infer-resnet50-fp16-b$batch.json" --no-progress
done
bench_one resnet50-fp32 60 "$SWEEP" --no-peak
for arch in vgg16 googlenet resnet34 alexnet simple_vgg mnist_cnn mlp; do
    for precision in fp16 fp32; do
        bench_one "$arch-$precision" 40 "$SWEEP_SHORT" --no-peak
    done
done
if [[ $PROVIDER == cpu ]]; then
    finish "dry run on the CPU provider: the sequence ran; its figures are not GPU figures" 0
elif ((FAILED)); then
    finish "done on the GPU, but a step failed or was cut: see Steps" 1
fi
finish "all steps passed on the GPU" 0
