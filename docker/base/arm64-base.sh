#!/usr/bin/env bash
# Builds a minimal Debian bookworm **arm64** base image with Python 3.11 on an x86 machine without
# running any aarch64 code: `mmdebstrap --variant=extract` downloads the packages and their
# dependencies from Debian's archive and unpacks them on the host; what their maintainer scripts would
# have done under QEMU and this image needs is done here on the host (accounts, /bin/sh, the CA bundle,
# byte-compiling the standard library with the host's Python 3.11). Imported into podman as linux/arm64.
#
#   docker/base/arm64-base.sh            build (or reuse) the base; prints its image name last
#   DEBIAN_MIRROR=http://… SUITE=bookworm    where the packages come from (default: deb.debian.org)
#
# Why not debootstrap: its second stage runs dpkg and every maintainer script under QEMU, one package
# at a time (measured here: 1924 s of a 45 min build). Here QEMU runs nothing; the packages stay
# "unpacked" (dpkg's own word: their files are in place, their maintainer scripts did not run), and
# /var/lib/dpkg/status says so, so `dpkg --configure -a` in a derived image finishes the job if that
# image needs it (e.g. before apt-get). Python, its standard library, venv and the agent's wheels need
# none of those scripts.
#
# The image is tagged with a hash of this script (and common.sh), the suite, the mirror and the CA bundle, so a
# second run on the same machine reuses it (`podman image exists`) in well under a second.
# Needs root (mmdebstrap --mode=root keeps file owners), podman and mmdebstrap (scripts/system-deps.sh).
set -euo pipefail
SUITE=${SUITE:-bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
# The agent needs python3 (+ venv for its virtual environment); the rest is what the image's RUN steps
# and a shell use: dash as /bin/sh, bash, coreutils, passwd (useradd), libc-bin; libstdc++6 for the
# numpy and ONNX Runtime wheels (manylinux expects it from the system).
PACKAGES=base-files,base-passwd,bash,coreutils,dash,libc-bin,libstdc++6,passwd,python3,python3-venv,ca-certificates
REPO_NAME=${BASE_REPO:-localhost/edgecompress-base}
ARCH=arm64

# shellcheck source=docker/base/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
base_image_start arm64-base.sh "$SUITE-$ARCH" "$SUITE $DEBIAN_MIRROR $PACKAGES $ARCH" mmdebstrap \
  "docker/base/arm64-base.sh needs root (file owners in the image)"
rootfs=$(mktemp -d /var/tmp/edgecompress-rootfs-arm64.XXXXXX)
trap 'rm -rf "$rootfs" "$rootfs.log"' EXIT
echo "mmdebstrap --variant=extract $SUITE/$ARCH ($PACKAGES) from $DEBIAN_MIRROR into $rootfs (no emulation)" >&2
# merged /usr as debootstrap and Debian 12 do (/bin -> usr/bin, ...); the customize hook records the
# unpacked packages in dpkg's status file from the downloaded .debs before mmdebstrap removes them
# (the extract variant runs extract hooks, not customize hooks; the merged-usr hook's usr-is-merged is
# already there, installed by the host's dpkg).
mmdebstrap --mode=root --variant=extract --architectures="$ARCH" --include="$PACKAGES" \
  --setup-hook=/usr/share/mmdebstrap/hooks/merged-usr/setup00.sh \
  --extract-hook='for deb in "$1"/var/cache/apt/archives/*.deb; do
      dpkg-deb -f "$deb" | sed "1a Status: install ok unpacked"; echo; done >> "$1/var/lib/dpkg/status"' \
  "$SUITE" "$rootfs" "$DEBIAN_MIRROR" >"$rootfs.log" 2>&1 || { tail -n 30 "$rootfs.log" >&2; exit 1; }
packages=$(grep -c '^Package:' "$rootfs/var/lib/dpkg/status")
[ "$packages" -gt 10 ] && [ -x "$rootfs/usr/bin/python3" ] || {
  echo "error: mmdebstrap left no python3 (status lists $packages packages)" >&2; exit 1; }

# What base-passwd's and passwd's maintainer scripts do: the system accounts, shadowed.
cp "$rootfs/usr/share/base-passwd/passwd.master" "$rootfs/etc/passwd"
cp "$rootfs/usr/share/base-passwd/group.master" "$rootfs/etc/group"
cut -d: -f1 "$rootfs/etc/passwd" | sed 's/$/:*:19000:0:99999:7:::/' > "$rootfs/etc/shadow"
cut -d: -f1 "$rootfs/etc/group" | sed 's/$/:*::/' > "$rootfs/etc/gshadow"
chmod 640 "$rootfs/etc/shadow" "$rootfs/etc/gshadow"
chgrp 42 "$rootfs/etc/shadow" "$rootfs/etc/gshadow"  # group shadow in base-passwd's table
# dash's: /bin/sh; base-files': a shell list; ca-certificates': the bundle (the host's: it may carry a
# proxy's CA).
[ -e "$rootfs/usr/bin/sh" ] || ln -s dash "$rootfs/usr/bin/sh"
printf '/bin/sh\n/usr/bin/sh\n/bin/bash\n/usr/bin/bash\n/bin/dash\n/usr/bin/dash\n' > "$rootfs/etc/shells"
mkdir -p "$rootfs/etc/ssl/certs"
[ -f "$CA_BUNDLE" ] && cp "$CA_BUNDLE" "$rootfs/etc/ssl/certs/ca-certificates.crt"
# python3.11's (py3compile): byte-compiled standard library, else every start under QEMU compiles it
# again. The bytecode depends on the Python version only, so the host's 3.11 makes the same files;
# unchecked-hash: valid whatever the files' times become in the image.
pyver=$(basename "$(readlink -f "$rootfs/usr/bin/python3")")
if command -v "$pyver" >/dev/null; then
  "$pyver" -m compileall -q -j 0 -s "$rootfs" -p / --invalidation-mode unchecked-hash \
    -x '/(test|tests|idlelib|lib2to3/tests)/' "$rootfs/usr/lib/$pyver" >/dev/null 2>&1 || true
else
  echo "no host $pyver: the standard library is left uncompiled" >&2
fi
rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
       "$rootfs"/var/log/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/tmp/*
tar -C "$rootfs" --numeric-owner -c . | podman import --quiet --os linux --arch "$ARCH" \
  --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' \
  --message "mmdebstrap --variant=extract --architectures=$ARCH $SUITE + $PACKAGES ($packages packages, unpacked)" \
  - "$tag" >/dev/null
echo "built base image $tag ($packages packages) in $(( $(date +%s) - start )) s" >&2
echo "$tag"
