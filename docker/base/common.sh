# Sourced by docker/base/bootstrap-base.sh and docker/base/arm64-base.sh: the part of a base-image
# build they share: the content-hash tag, reusing an image already built under it, and the checks
# before building (podman and the bootstrap tool on PATH, root).
#
#   base_image_start SCRIPT TAG_PREFIX KEY TOOL ROOT_ERROR
#
# Sets `tag` ($REPO_NAME:TAG_PREFIX-<hash of SCRIPT, this file, KEY and $CA_BUNDLE>) and `start` (the
# time the build starts); when podman already has `tag`, prints it and exits 0 (nothing to build).

base_image_start() {
  local script=$1 prefix=$2 key=$3 bootstrap_tool=$4 root_error=$5 here hash tool
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  hash=$( { cat "$here/$script" "$here/common.sh"; echo "$key"; cat "$CA_BUNDLE" 2>/dev/null || true; } \
          | sha256sum | cut -c1-12)
  tag="$REPO_NAME:$prefix-$hash"
  if podman image exists "$tag"; then
    echo "base image $tag already built (cached)" >&2
    echo "$tag"
    exit 0
  fi
  for tool in podman "$bootstrap_tool"; do
    command -v "$tool" >/dev/null || { echo "error: $tool not found; run scripts/system-deps.sh" >&2; exit 1; }
  done
  [ "$(id -u)" -eq 0 ] || { echo "error: $root_error" >&2; exit 1; }
  start=$(date +%s)
}
