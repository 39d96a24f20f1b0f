#!/usr/bin/env bash
# Build what scripts/gpu_check.sh needs on the GPU machine, here on the CPU machine, in git-ignored folders:
#   .whl/          wheels the GPU image lacks (pure Python: diffusers, and clip-anytorch for its CLIP vocabulary)
#   .gpu/minilm/   all-MiniLM-L6-v2 packed to carry (int8 word embeddings + fp16, xz; scripts/gpu_tools.py)
#   .gpu/data/     a small InstructPix2Pix dataset at the camera's size, converted from a few simulated episodes
#   .gpu/PREPARED.json   what was built, from which commit
# then checks that the working tree plus .whl and .gpu fit the device tool's 64 MiB, and prints the run call.
#
# usage: scripts/gpu_prepare.sh [--src data/sim] [--episodes 8] [--tasks "t1 t2"] [--pairing both]
#                               [--val-fraction 0.25] [--keep-splits DATASET] [--data-from DATASET]
#                               [--skip-wheels] [--skip-minilm] [--skip-data]
# --keep-splits DATASET keeps the episode splits of an earlier conversion (the project's own dataset), so the
# GPU-trained model is judged on the same val episodes as the embedded one; --data-from copies an already
# converted dataset instead of converting. Needs network for the wheels (pip download); the rest is offline.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PY=$REPO/.venv/bin/python; else PY=python3; fi
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false

SRC=data/sim EPISODES=8 TASKS="" PAIRING=both VAL=0.25 KEEP="" DATA_FROM=""
DO_WHEELS=1 DO_MINILM=1 DO_DATA=1
DATA_MAX_MB=40   # the issue's bound on the carried dataset (decimal MB)
while [ $# -gt 0 ]; do
    case $1 in
        --src) SRC=$2; shift ;;
        --episodes) EPISODES=$2; shift ;;
        --tasks) TASKS=$2; shift ;;
        --pairing) PAIRING=$2; shift ;;
        --val-fraction) VAL=$2; shift ;;
        --keep-splits) KEEP=$2; shift ;;
        --data-from) DATA_FROM=$2; shift ;;
        --skip-wheels) DO_WHEELS=0 ;;
        --skip-minilm) DO_MINILM=0 ;;
        --skip-data) DO_DATA=0 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "gpu_prepare: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
for ignored in .whl .gpu; do
    if ! git check-ignore -q "$ignored/x"; then
        echo "gpu_prepare: $ignored/ is not git-ignored; add /$ignored/ to .gitignore first" >&2; exit 2
    fi
done
mkdir -p .gpu

# 1. wheels: the versions this environment runs, for CPython 3.12 manylinux (both pure Python). Their other
#    requirements are on the GPU image already (KINDS.md), except importlib_metadata, which diffusers imports only
#    on Python < 3.8; clip-anytorch is only read for its BPE file (frameplan_core.text.find_clip_bpe), never imported.
if [ "$DO_WHEELS" = 1 ]; then
    ver() { "$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }
    WHEELS="diffusers==$(ver diffusers) clip-anytorch==$(ver clip-anytorch)"
    NEW=$(mktemp -d "${TMPDIR:-/tmp}/gpu_prepare_whl.XXXXXX")
    # shellcheck disable=SC2086  # WHEELS is a list of requirement words
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$NEW" $WHEELS
    rm -rf .whl && mkdir .whl && mv "$NEW"/*.whl .whl/ && rmdir "$NEW"  # one version of each: two stop the install
    echo "gpu_prepare: wheels: $(cd .whl && ls)"
fi

# 2. MiniLM pack (skipped when up to date with the installed wheel)
if [ "$DO_MINILM" = 1 ]; then
    nice "$PY" scripts/gpu_tools.py pack-minilm .gpu/minilm
fi

# 3. dataset: the first N episodes of each task, camera size kept (evaluation at the published geometry)
if [ "$DO_DATA" = 1 ]; then
    rm -rf .gpu/data.new
    if [ -n "$DATA_FROM" ]; then
        cp -r "$DATA_FROM" .gpu/data.new
        DATA_DESC="copied from $DATA_FROM"
    else
        SUB=$(mktemp -d "${TMPDIR:-/tmp}/gpu_prepare.XXXXXX")
        trap 'rm -rf "$SUB"' EXIT
        # shellcheck disable=SC2086  # TASKS is a list of task names
        "$PY" scripts/gpu_tools.py subset "$SRC" "$SUB/episodes" --episodes "$EPISODES" ${TASKS:+--tasks $TASKS}
        CONVERT=(-m frameplan_cli convert robotwin "$SUB/episodes" --to ip2p .gpu/data.new --interval 50
                 --stride 10 --pairing "$PAIRING" --val-fraction "$VAL" --test-fraction 0 --skip-bad)
        if [ -n "$KEEP" ]; then CONVERT+=(--keep-splits "$KEEP"); fi
        nice "$PY" "${CONVERT[@]}"
        DATA_DESC="frameplan convert robotwin <first $EPISODES episodes per task of $SRC> --to ip2p --interval 50 --stride 10 --pairing $PAIRING --val-fraction $VAL --test-fraction 0${KEEP:+ --keep-splits $KEEP}"
    fi
    rm -rf .gpu/data && mv .gpu/data.new .gpu/data
    DATA_BYTES=$(du -sb .gpu/data | cut -f1)
    if [ "$DATA_BYTES" -gt $((DATA_MAX_MB * 1000000)) ]; then
        echo "gpu_prepare: .gpu/data is $((DATA_BYTES / 1000000)) MB, over the ${DATA_MAX_MB} MB bound: use fewer --episodes" >&2
        exit 1
    fi
fi

# what was built, from which commit (the summary of the GPU run quotes it)
"$PY" - "${DATA_DESC:-}" <<'EOF'
import json, subprocess, sys
from pathlib import Path
from frameplan_core import atomic
path = Path(".gpu/PREPARED.json")
old = json.loads(path.read_text()) if path.is_file() else {}
git = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True).stdout.strip()
info = {"data": sys.argv[1] or old.get("data"), "commit": git("rev-parse", "HEAD"),
        "uncommitted_files": len(git("status", "--porcelain").splitlines()),
        "wheels": sorted(p.name for p in Path(".whl").glob("*.whl"))}
if Path(".gpu/data/splits.json").is_file():
    splits = json.loads(Path(".gpu/data/splits.json").read_text())
    info["samples"] = {k: len(v) for k, v in splits.get("samples", {}).items()}
    info["episodes"] = {k: len(v) for k, v in splits.get("episodes", {}).items()}
    print("gpu_prepare: dataset", info["samples"], "samples")
atomic.write_json(path, info)
EOF

# 4. does it travel? working tree + .whl + .gpu within 64 MiB, 1 MiB kept for files added before the run
if ! "$PY" scripts/gpu_tools.py carry-size --carry .whl .gpu --reserve-mib 1; then
    echo "gpu_prepare: too big for the device tool: convert fewer --episodes (the dataset is the part that can shrink)" >&2
    exit 1
fi
cat <<'EOF'
gpu_prepare: ready. On a session whose task is lent a GPU (device tool `status`: can_start_another true), call the
device tool's run once:
  command:   bash scripts/gpu_check.sh
  carry:     [".whl", ".gpu"]
  timeout_s: 540
Results come back from $OUT (summary.json, gpu_check.log, eval_report.md, model.tar, artifacts.tar.gz).
EOF
