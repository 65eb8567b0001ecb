#!/usr/bin/env bash
# Builds the farm agent image for linux/arm64 (docker/agent/Dockerfile.arm64) with podman, offline.
#
#   docker/build-agent.sh [--bootstrap-base | --base IMAGE] [--jetson] [--tag IMAGE]
#
#   --bootstrap-base  FROM a Debian bookworm arm64 base made by docker/base/arm64-base.sh (mmdebstrap
#                     --variant=extract on the host, no emulation): for machines that reach no registry
#   --base IMAGE      FROM IMAGE (default python:3.11-slim, its arm64 variant); needs CPython 3.11 + venv
#   --jetson          build docker/agent/Dockerfile.jetson instead, with --base as its L4T base (here: the
#                     bootstrapped base and the CPU ONNX Runtime wheel; on a Jetson: NVIDIA's L4T image
#                     and a JetPack GPU wheel, see docs/farm.md)
#   --tag IMAGE       image name (default localhost/edgecompress-agent:<version>-arm64, -jetson)
#
# The aarch64 wheelhouse (docker/.context-agent/deps-aarch64, git-ignored: `pip download --platform
# manylinux_2_28_aarch64 --only-binary=:all:`, pins from docker/agent/requirements.txt under
# requirements.lock's constraints) is kept while those files are unchanged. For Dockerfile.arm64 the
# virtual environment's site-packages is assembled on this machine (`pip install --target --platform`
# unpacks wheels and runs no aarch64 code; byte-compiled by the host's CPython 3.11 when it has one), so
# the build runs under QEMU only a venv shell, useradd and the smoke tests. The image builds with
# --network=none. On x86 the arm64 steps run under QEMU: scripts/system-deps.sh installs
# qemu-user-static and registers it with binfmt_misc. PYTHON=… the interpreter whose pip downloads and
# unpacks the wheels; EDGECOMPRESS_AGENT_BUILD_CONTEXT=DIR another context folder (one build at a time
# per folder); ORT_PACKAGE=onnxruntime-gpu for --jetson with a JetPack wheel in the wheelhouse.
# Prints the image name on its last line; timings of its steps on stderr.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
base=python:3.11-slim bootstrap=0 dockerfile=docker/agent/Dockerfile.arm64 flavour=arm64 tag=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bootstrap-base) bootstrap=1 ;;
    --base) base=$2; shift ;;
    --jetson) dockerfile=docker/agent/Dockerfile.jetson flavour=jetson ;;
    --tag) tag=$2; shift ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "error: unknown option $1 (see docker/build-agent.sh --help)" >&2; exit 2 ;;
  esac
  shift
done
command -v podman >/dev/null || { echo "error: podman not found (scripts/system-deps.sh installs it)" >&2; exit 1; }
if [ "$(uname -m)" != aarch64 ] && [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  echo "error: building linux/arm64 on $(uname -m) needs qemu-aarch64 registered with binfmt_misc;" \
       "run scripts/system-deps.sh (as root)" >&2
  exit 1
fi
# edgecompress and edgecompress.runtime are under src/ (PYTHONPATH=src imports them, though not the
# package-dir-mapped components/pipelines, which the agent does not use): this checkout's, installed or not.
version=$(PYTHONPATH=src "$PYTHON" -c 'import edgecompress; print(edgecompress.__version__)')
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
[ "$revision" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && revision="$revision-dirty"
[ -n "$tag" ] || tag="localhost/edgecompress-agent:$version-$flavour"
tag=${tag//+/_}  # a local version (0.1.0+abc) is not a valid tag

quiet_pip() { "$PYTHON" -m pip "$@" 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; } >&2; }

ctx=${EDGECOMPRESS_AGENT_BUILD_CONTEXT:-$repo/docker/.context-agent}
deps="$ctx/deps-aarch64"
start=$(date +%s)
mkdir -p "$ctx"
exec 9>"$ctx/.lock"  # one build at a time per context (they share app/ and deps/)
flock 9
rm -rf "$ctx/app" "$ctx/deps"
mkdir -p "$ctx/app"
echo "building the edgecompress wheel" >&2
# setuptools builds in the checkout (build/, *.egg-info): take turns with docker/build.sh there.
mkdir -p "$repo/docker/.context"
exec 8>"$repo/docker/.context/.wheel.lock"
flock 8
quiet_pip wheel --quiet --no-deps -w "$ctx/app" .
rm -rf build
flock -u 8

stamp=$( { cat docker/agent/requirements.txt requirements.lock; echo cp311-manylinux_2_28_aarch64; } | sha256sum | cut -c1-16)
if [ "$(cat "$deps.stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "downloading the aarch64 wheelhouse (docker/agent/requirements.txt, requirements.lock constraints)" >&2
  rm -rf "$deps" && mkdir -p "$deps"
  PIP_FIND_LINKS="" quiet_pip download --quiet --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 \
    -c requirements.lock -r docker/agent/requirements.txt -d "$deps"
  ls "$deps" | grep -q '^onnxruntime-.*aarch64' || { echo "error: no aarch64 onnxruntime wheel downloaded" >&2; exit 1; }
  echo "$stamp" > "$deps.stamp"
else
  echo "reusing the aarch64 wheelhouse $deps" >&2
fi
step() { echo "[$(( $(date +%s) - start )) s] $*" >&2; }
step "wheelhouse ready"
if [ "$bootstrap" = 1 ]; then
  base=$(docker/base/arm64-base.sh | tail -n 1)
  step "base $base ready"
fi
rm -rf "$ctx/site-packages"
if [ "$flavour" = jetson ]; then
  # Dockerfile.jetson installs in the image: on a Jetson its Python (3.10 on L4T r36) and GPU wheel differ.
  cp -al "$deps" "$ctx/deps" 2>/dev/null || cp -a "$deps" "$ctx/deps"
else
  site="$ctx/site-packages"
  quiet_pip install --quiet --no-index --no-deps --no-compile --only-binary=:all: --python-version 3.11 \
    --implementation cp --abi cp311 --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 \
    --platform manylinux2014_aarch64 --target "$site" "$deps"/*.whl "$ctx"/app/edgecompress-*.whl
  rm -rf "$site/bin"  # console scripts with this machine's interpreter; the image uses python3 -m
  if command -v python3.11 >/dev/null; then
    python3.11 -m compileall -q -j 0 -s "$site" -p /opt/edgecompress/lib/python3.11/site-packages \
      --invalidation-mode unchecked-hash "$site" >/dev/null 2>&1 || true
    touch "$site/.compiled"
  fi
  step "site-packages assembled on the host ($(du -sm "$site" | cut -f1) MB)"
fi
echo "building $tag ($dockerfile, linux/arm64) FROM $base" >&2
podman build --platform linux/arm64 --network=none -f "$dockerfile" \
  --build-arg BASE_IMAGE="$base" --build-arg L4T_BASE="$base" --build-arg ORT_PACKAGE="${ORT_PACKAGE:-onnxruntime}" \
  --build-arg VERSION="$version" --build-arg REVISION="$revision" -t "$tag" "$ctx" >&2
rm -rf "$ctx/deps" "$ctx/site-packages"
step "image built"
# ONNX Runtime imports and sees an aarch64 CPU (under QEMU: with an aarch64 /proc/cpuinfo mounted,
# without which its import segfaults; see edgecompress.runtime.facts.emulated_cpuinfo).
smoke=(podman run --rm --network=none --platform linux/arm64 --entrypoint python3)
if [ "$(uname -m)" != aarch64 ]; then
  PYTHONPATH=src "$PYTHON" -c 'from edgecompress.runtime.facts import emulated_cpuinfo; print(emulated_cpuinfo("cortex-a72"))' \
    > "$ctx/cpuinfo-cortex-a72"
  smoke+=(-e QEMU_CPU=cortex-a72 -v "$ctx/cpuinfo-cortex-a72:/proc/cpuinfo:ro")
fi
"${smoke[@]}" "$tag" -c "import platform, onnxruntime as o; from edgecompress.runtime.facts import cpu_features as c; \
print('smoke test:', platform.machine(), 'onnxruntime', o.__version__, o.get_available_providers(), c())" >&2
echo "built $tag in $(( $(date +%s) - start )) s" >&2
echo "$tag"
