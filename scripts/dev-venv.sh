#!/usr/bin/env bash
# A checkout's own environment, layered on an existing one: scripts/dev-venv.sh [BASE_VENV] [DEST]
#
# edgecompress.components and edgecompress.pipelines live in components/ and pipelines/ at the top of
# the repository, mapped by pyproject's package-dir: only an installed checkout imports them
# (PYTHONPATH=src does not). Several worktrees can share one full environment (BASE_VENV, by default
# the main checkout's .venv, made by `make setup`) without installing into it: DEST (default
# .venv-dev, ignored by git) is a venv without packages of its own whose .pth puts BASE_VENV's
# site-packages after its own, and holds an editable install of this checkout only. The base's own
# .pth files (its editable install) are not read, so this checkout's code is the code that runs.
# BASE_VENV's console scripts get a copy here that runs DEST's python. Seconds; re-run after moving
# or adding a package (pyproject's package list).
set -euo pipefail
cd "$(dirname "$0")/.."
common=$(git rev-parse --path-format=absolute --git-common-dir 2>/dev/null || echo "$PWD/.git")
base=${1:-$(dirname "$common")/.venv}
dest=${2:-.venv-dev}  # relative to the repository root
[ -x "$base/bin/python" ] || { echo "dev-venv: no python in base environment $base (run make setup there)" >&2; exit 2; }
base=$(cd "$base" && pwd)
purelib='import sysconfig; print(sysconfig.get_path("purelib"))'
"$base/bin/python" -m venv --clear --without-pip "$dest"
dest=$(cd "$dest" && pwd)
# The base's site-packages, and those it is layered on in turn (a .pth in a .pth'd folder is not read).
base_site=$("$base/bin/python" -c "$purelib")
{ echo "$base_site"; cat "$base_site/_base_venv.pth" 2>/dev/null || true; } >"$("$dest/bin/python" -c "$purelib")/_base_venv.pth"
for tool in "$base"/bin/*; do
  name=$(basename "$tool")
  [ -e "$dest/bin/$name" ] || [ ! -f "$tool" ] && continue
  if head -c 2 "$tool" | grep -q '#!'; then
    sed "1s|^#!.*python[0-9.]*\$|#!$dest/bin/python|" "$tool" >"$dest/bin/$name" && chmod +x "$dest/bin/$name"
  else
    ln -s "$tool" "$dest/bin/$name"
  fi
done
# The base's pip and setuptools (no build isolation: nothing is downloaded); the base's own
# edgecompress is outside this environment, so pip leaves it alone.
"$dest/bin/python" -m pip install -q --no-deps --no-build-isolation --no-warn-conflicts -e .
touch "$dest/.edgecompress-installed"
echo "$dest: this checkout's edgecompress over $base's packages ($dest/bin/python, make VENV=$dest -o $dest/.edgecompress-installed …)"
