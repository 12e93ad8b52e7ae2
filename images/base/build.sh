#!/usr/bin/env bash
# Build a base image from Debian's archive with debootstrap, for machines that have no
# container registry.
#
#   images/base/build.sh [IMAGE [SUITE]]
#
# IMAGE defaults to dbops/base:bookworm; SUITE defaults to IMAGE's tag, so
# `images/base/build.sh dbops/base:bullseye` bootstraps bullseye (Debian 11) and
# `images/base/build.sh dbops/base:trixie` trixie (Debian 13). A tag ending in -slim
# (dbops/base:trixie-slim) leaves out Python and curl: bases of images that need neither,
# such as the PostgreSQL servers of other versions, build half a minute faster.
set -euo pipefail
image=${1:-dbops/base:bookworm}
tag=${image##*:}
suite=${2:-${tag%-slim}}
include=python3,python3-venv,ca-certificates,curl
[[ "$tag" == *-slim ]] && include=ca-certificates
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if [ ! -e "/usr/share/debootstrap/scripts/$suite" ]; then
    echo "unknown Debian suite '$suite': name it as IMAGE's tag (dbops/base:bookworm) or as the second argument" >&2
    exit 2
fi
rootfs=$(mktemp -d /tmp/dbops-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "debootstrap $suite into $rootfs (about a minute)"
debootstrap --variant=minbase --include="$include" \
    "$suite" "$rootfs" "$mirror" >/dev/null
# Keep apt working inside derived images and the image small.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' - "$image" >/dev/null
echo "built $image in $SECONDS s"
