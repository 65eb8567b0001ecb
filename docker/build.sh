#!/usr/bin/env bash
# Builds the edgecompress components image (docker/Dockerfile) with podman or docker.
#
#   docker/build.sh [--bootstrap-base | --base IMAGE] [--cuda] [--tag IMAGE] [--push]
#
#   --bootstrap-base  build FROM a Debian bookworm base made by docker/base/bootstrap-base.sh
#                     (podman only; for machines that reach no container registry, like CI here)
#   --base IMAGE      build FROM IMAGE (default python:3.11-slim); it needs Python 3.11, venv and pip
#   --cuda            torch 2.13.0 from PyPI (CUDA build, multi-GB) instead of the CPU build
#   --tag IMAGE       image name (default: what the components reference, `edgecompress.settings.
#                     component_image()`: $EDGECOMPRESS_IMAGE, else $EDGECOMPRESS_REGISTRY/components:<version>)
#   --push            push the image after building it
#
# The build context (docker/.context/, git-ignored) is a wheelhouse: the project's wheel and every
# dependency pinned by requirements.lock, resolved here with this machine's pip (its find-links give the
# CPU torch wheel). The Dockerfile then installs with --no-index and builds with --network=none.
# The dependency wheelhouse is kept between runs while requirements.lock and pyproject.toml are unchanged.
# ENGINE=docker to use docker; PYTHON=… the Python 3.11 interpreter whose pip resolves the wheels;
# EDGECOMPRESS_BUILD_CONTEXT=DIR another context folder (one build at a time runs per folder).
# Prints the image name on its last line.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
ENGINE=${ENGINE:-podman}
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
base=python:3.11-slim bootstrap=0 variant=cpu tag="" push=0
while [ $# -gt 0 ]; do
  case "$1" in
    --bootstrap-base) bootstrap=1 ;;
    --base) base=$2; shift ;;
    --cuda) variant=cuda ;;
    --tag) tag=$2; shift ;;
    --push) push=1 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "error: unknown option $1 (see docker/build.sh --help)" >&2; exit 2 ;;
  esac
  shift
done
command -v "$ENGINE" >/dev/null || { echo "error: $ENGINE not found (scripts/system-deps.sh installs podman)" >&2; exit 1; }
pyver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$pyver" = 3.11 ] || { echo "error: $PYTHON is Python $pyver; the image's wheels need a 3.11 pip (set PYTHON=)" >&2; exit 1; }
# edgecompress and edgecompress.settings are under src/ (PYTHONPATH=src imports them, though not the
# package-dir-mapped components/pipelines): this checkout's version and tag, installed or not.
version=$(PYTHONPATH=src "$PYTHON" -c 'import edgecompress; print(edgecompress.__version__)')
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
[ "$revision" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && revision="$revision-dirty"
[ -n "$tag" ] || tag=$(PYTHONPATH=src "$PYTHON" -c 'from edgecompress.settings import component_image; print(component_image())')
[ "$variant" = cuda ] && [ -z "${EDGECOMPRESS_IMAGE:-}" ] && tag="$tag-cuda"

# pip warns about every index folder a package is missing from: keep the real messages only.
quiet_pip() { "$PYTHON" -m pip "$@" 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; } >&2; }

ctx=${EDGECOMPRESS_BUILD_CONTEXT:-$repo/docker/.context}
deps="$ctx/deps-$variant"
start=$(date +%s)
mkdir -p "$ctx"
# One build at a time per checkout: two builds share the context (a test run and a developer, or two
# test workers) and would delete each other's wheels.
exec 9>"$ctx/.lock"
flock 9
# Under the lock no other build runs: app.* folders left are from killed builds.
rm -rf "$ctx/app" "$ctx"/app.* "$ctx/deps"
# The project wheel is built into a private folder first and moved into app/ only once its
# dependencies are resolved, so app/ never holds a half-built wheel.
staging=$(mktemp -d "$ctx/app.XXXXXX") && chmod 755 "$staging"
trap 'rm -rf "$staging"' EXIT
echo "building the edgecompress wheel" >&2
# setuptools builds in the checkout (build/, *.egg-info): builds with other contexts take turns there.
mkdir -p "$repo/docker/.context"
exec 8>"$repo/docker/.context/.wheel.lock"
flock 8
quiet_pip wheel --quiet --no-deps -w "$staging" .
rm -rf build
flock -u 8
wheel=$(ls "$staging"/edgecompress-*.whl)
# components/ and pipelines/ ship as edgecompress.components/.pipelines only where pyproject lists them.
"$PYTHON" -c "import sys, zipfile, pathlib; n = zipfile.ZipFile(sys.argv[1]).namelist(); \
want = [f'edgecompress/{p.as_posix()}' for g in ('components/*/component.py', 'pipelines/*.py') for p in pathlib.Path().glob(g)]; \
missing = sorted(p for p in want if p not in n); \
sys.exit(f'error: the wheel lacks {missing} (pyproject.toml packages)') if missing or not want else None" "$wheel"

# Re-resolved when requirements.lock or pyproject.toml change; the stamp lives outside deps/ so that the
# image layer that installs deps/ is reused whenever the resolved wheels are the same.
stamp=$( { cat requirements.lock pyproject.toml; echo "$variant"; } | sha256sum | cut -c1-16)
if [ "$(cat "$deps.stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "resolving the dependency wheelhouse ($variant torch; pinned by requirements.lock)" >&2
  rm -rf "$deps" && mkdir -p "$deps"
  if [ "$variant" = cuda ]; then
    # Ignore local find-links (they hold the CPU build): torch==2.13.0 from PyPI is the CUDA build.
    PIP_FIND_LINKS="" quiet_pip wheel --quiet -w "$deps" -c requirements.lock "$wheel"
  else
    quiet_pip wheel --quiet -w "$deps" -c requirements.lock "$wheel"
    ls "$deps" | grep -q '^torch-.*+cpu' || { echo "error: no CPU torch wheel resolved (pip find-links?)" >&2; exit 1; }
  fi
  rm -f "$deps"/edgecompress-*.whl
  echo "$stamp" > "$deps.stamp"
else
  echo "reusing the dependency wheelhouse $deps" >&2
fi
# Only this build writes app/ while it holds the lock. If app/ is there now, something wrote into the
# context without the lock: `mv` would put the wheel one level too deep (app/app.XXXXXX/), so stop.
if [ -e "$ctx/app" ]; then
  echo "error: $ctx/app appeared while this build held $ctx/.lock: something writes into the build" \
       "context without taking the lock; not moving the wheel onto it" >&2
  ls -la "$ctx/app" >&2 || true
  exit 1
fi
mv -T "$staging" "$ctx/app"
if [ "$bootstrap" = 1 ]; then
  [ "$ENGINE" = podman ] || { echo "error: --bootstrap-base needs podman" >&2; exit 2; }
  base=$(docker/base/bootstrap-base.sh | tail -n 1)
fi
echo "building $tag FROM $base with $ENGINE" >&2
# The Dockerfile reads deps/ and app/ (deps/ as hard links to the cached wheelhouse of this variant).
cp -al "$deps" "$ctx/deps" 2>/dev/null || cp -a "$deps" "$ctx/deps"
"$ENGINE" build --network=none -f docker/Dockerfile \
  --build-arg BASE_IMAGE="$base" --build-arg VERSION="$version" --build-arg REVISION="$revision" \
  --build-arg TORCH_VARIANT="$variant" -t "$tag" "$ctx" >&2
rm -rf "$ctx/deps"
[ "$push" = 1 ] && "$ENGINE" push "$tag" >&2
echo "built $tag in $(( $(date +%s) - start )) s" >&2
echo "$tag"
