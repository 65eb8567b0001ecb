#!/usr/bin/env bash
# Installs the Debian packages the project needs, only those missing. Idempotent; quiet when done.
#   dataset-fashion-mnist  the real benchmark's data set (read from /usr/share/datasets)
#   podman runc conmon containernetworking-plugins uidmap  run and build the images (tests/containers)
#   debootstrap            bootstraps the Debian base image when no registry is reachable (docker/base)
#   postgresql             the farm's store on PostgreSQL: tests start their own server with initdb/pg_ctl
#                          in a temporary folder (src/edgecompress/farm/pgserver.py); no service is used
# Extra packages can be asked for by name: scripts/system-deps.sh NAME...
# It also writes /etc/containers/containers.conf (runc, no default ulimits) when that file is absent:
# what podman needs to run containers on machines like CI's (see DESIGN.md, "Containers and Kubernetes").
set -euo pipefail
wanted=(dataset-fashion-mnist podman runc conmon containernetworking-plugins uidmap debootstrap postgresql "$@")
missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO=sudo; else SUDO=""; fi
else SUDO=""; fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] && [ -z "$SUDO" ]; then
    echo "error: missing Debian packages (${missing[*]}); install them as root: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
conf=/etc/containers/containers.conf
if [ ! -e "$conf" ] && { [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; }; then
  echo "writing $conf (runtime = runc, default_ulimits = [])"
  $SUDO mkdir -p /etc/containers
  printf '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n' | $SUDO tee "$conf" >/dev/null
fi
