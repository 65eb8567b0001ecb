#!/usr/bin/env bash
# Installs the Debian packages the project needs, only those missing. Idempotent; quiet when done.
#   dataset-fashion-mnist  the real benchmark's data set (read from /usr/share/datasets)
# Extra packages can be asked for by name: scripts/system-deps.sh podman debootstrap
set -euo pipefail
wanted=(dataset-fashion-mnist "$@")
missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO=sudo; else
    echo "error: missing Debian packages (${missing[*]}); install them as root: apt-get install ${missing[*]}" >&2
    exit 1
  fi
else SUDO=""; fi
echo "installing Debian packages: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
