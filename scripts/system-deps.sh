#!/usr/bin/env bash
# Installs the Debian packages the project needs, only those missing. Idempotent; quiet when done.
#   dataset-fashion-mnist  the real benchmark's data set (read from /usr/share/datasets)
#   podman runc conmon containernetworking-plugins uidmap  run and build the images (tests/containers)
#   debootstrap            bootstraps the Debian base image when no registry is reachable (docker/base)
#   mmdebstrap             the arm64 agent's base, unpacked on the host without emulation (docker/base/arm64-base.sh)
#   qemu-user-static binfmt-support  run linux/arm64 images and binaries on x86 (the arm64 farm agent under
#                          QEMU, `edgecompress isa-check`): binfmt_misc is mounted where it is not and
#                          the qemu-aarch64 handler registered (fix-binary, so it works inside containers)
#   postgresql             the farm's store on PostgreSQL: tests start their own server with initdb/pg_ctl
#                          in a temporary folder (src/edgecompress/farm/pgserver.py); no service is used
# Extra packages can be asked for by name: scripts/system-deps.sh NAME...
# It also writes /etc/containers/containers.conf (runc, no default ulimits) when that file is absent:
# what podman needs to run containers on machines like CI's (see DESIGN.md, "Containers and Kubernetes").
set -euo pipefail
wanted=(dataset-fashion-mnist podman runc conmon containernetworking-plugins uidmap debootstrap mmdebstrap qemu-user-static binfmt-support postgresql "$@")
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
# aarch64 binaries run transparently once binfmt_misc is mounted and QEMU's handler is registered.
# Debian's qemu-user-static registers it through binfmt-support (update-binfmts) when binfmt_misc is
# mounted at install time; where it was not (containers, CI), mount and enable it here.
binfmt=/proc/sys/fs/binfmt_misc
if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then
  if [ ! -e "$binfmt/register" ]; then
    echo "mounting binfmt_misc on $binfmt"
    $SUDO mount -t binfmt_misc binfmt_misc "$binfmt"
  fi
  if [ ! -e "$binfmt/qemu-aarch64" ]; then
    echo "registering the qemu-aarch64 binfmt handler"
    $SUDO update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
  fi
  if [ ! -e "$binfmt/qemu-aarch64" ]; then
    echo "error: the qemu-aarch64 binfmt handler is not registered (update-binfmts --enable qemu-aarch64)" >&2
    exit 1
  fi
fi
