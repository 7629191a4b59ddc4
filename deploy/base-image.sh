#!/usr/bin/env bash
# Build the base image asyncps-base:bookworm from Debian's packages alone, for
# a Docker engine that reaches no image registry: debootstrap a minimal
# bookworm with Python 3.11 into a folder and `docker import` it.
# deploy/compose-deps.sh (make compose-deps) runs this first, and installs
# the project's dependencies on it.
#
# Skips everything when the image already exists (FORCE=1 rebuilds it).
# MIRROR names a Debian mirror (default: debootstrap's).
# Needs root (debootstrap) and a Docker engine; honours DOCKER_HOST.
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"  # dockerd, debootstrap

BASE_IMAGE=${BASE_IMAGE:-asyncps-base:bookworm}
SUITE=${SUITE:-bookworm}
PACKAGES=python3,python3-venv,python3-pip,ca-certificates

if [[ ${FORCE:-0} != 1 ]] && docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    echo "base image $BASE_IMAGE exists: kept"
    exit 0
fi

if ! command -v debootstrap >/dev/null; then
    echo "installing debootstrap"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null
fi

rootfs=$(mktemp -d /var/tmp/asyncps-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
log=$rootfs.log
echo "debootstrap $SUITE into $rootfs (log: $log)"
if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" ${MIRROR:+"$MIRROR"} >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "base-image.sh: debootstrap failed (full log: $log)" >&2
    exit 1
fi
rm -f "$log"
# What an image never needs: downloaded .debs, package lists (run apt-get
# update first, as in any Debian image), documentation and translations.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
       "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
       "$rootfs"/usr/share/locale/* "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/*
tar -C "$rootfs" --numeric-owner -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    --message "debootstrap --variant=minbase --include=$PACKAGES $SUITE" \
    - "$BASE_IMAGE" >/dev/null
echo "base image $BASE_IMAGE: $(docker image inspect -f '{{.Size}}' "$BASE_IMAGE" | awk '{printf "%.0f MB", $1/1e6}')," \
     "$(docker run --rm --network none "$BASE_IMAGE" python3 --version)"
