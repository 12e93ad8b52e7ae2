#!/usr/bin/env bash
# Build the base image from Debian's archive with debootstrap, for machines that have no
# container registry. Usage: images/base/build.sh IMAGE_NAME
set -euo pipefail
image=${1:-dbops/base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
rootfs=$(mktemp -d /tmp/dbops-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "debootstrap bookworm into $rootfs (about a minute)"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,curl \
    bookworm "$rootfs" "$mirror" >/dev/null
# Keep apt working inside derived images and the image small.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' - "$image" >/dev/null
echo "built $image"
