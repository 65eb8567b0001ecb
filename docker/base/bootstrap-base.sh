#!/usr/bin/env bash
# Builds a minimal Debian bookworm base image with Python 3.11 when no registry is reachable (CI here):
# debootstrap --variant=minbase + python3, pip, venv and the host's CA bundle, without the
# EXTERNALLY-MANAGED marker, imported into podman. Use it as the Dockerfile's BASE_IMAGE.
#
#   docker/base/bootstrap-base.sh            build (or reuse) the base; prints its image name last
#   DEBIAN_MIRROR=http://… SUITE=bookworm    where the packages come from (default: deb.debian.org)
#
# The image is tagged with a hash of this script (and common.sh), the suite, the mirror and the CA bundle, so a
# second run on the same machine reuses it (`podman image exists`) in well under a second.
# Needs root (debootstrap), podman and debootstrap (scripts/system-deps.sh installs both).
set -euo pipefail
SUITE=${SUITE:-bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
PACKAGES=python3,python3-venv,python3-pip,ca-certificates
REPO_NAME=${BASE_REPO:-localhost/edgecompress-base}

# shellcheck source=docker/base/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
base_image_start bootstrap-base.sh "$SUITE" "$SUITE $DEBIAN_MIRROR $PACKAGES" debootstrap "debootstrap needs root"
rootfs=$(mktemp -d /var/tmp/edgecompress-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "debootstrap $SUITE ($PACKAGES) from $DEBIAN_MIRROR into $rootfs" >&2
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$DEBIAN_MIRROR" >"$rootfs.log" 2>&1 || {
  tail -n 30 "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1; }
rm -f "$rootfs.log"
# The host's CA bundle (it may carry a proxy's CA), pip usable in the image, nothing cached.
[ -f "$CA_BUNDLE" ] && cp "$CA_BUNDLE" "$rootfs/etc/ssl/certs/ca-certificates.crt"
rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
       "$rootfs"/var/log/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/tmp/*
tar -C "$rootfs" --numeric-owner -c . | podman import --quiet \
  --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' \
  --message "debootstrap --variant=minbase $SUITE + $PACKAGES" - "$tag" >/dev/null
echo "built base image $tag in $(( $(date +%s) - start )) s" >&2
echo "$tag"
