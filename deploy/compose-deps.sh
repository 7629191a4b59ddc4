#!/usr/bin/env bash
# make compose-deps: what `docker-compose build` starts from, made once and
# kept; each step is skipped while what it made is up to date.
#
#   1. base        asyncps-base:bookworm, Debian's Python 3.11 from Debian's
#                  packages alone (deploy/base-image.sh): no image registry
#   2. wheelhouse  deploy/.wheelhouse: the CPU build of torch and every
#                  dependency the image installs (pyproject.toml's, less Ray:
#                  the image's programs run the grpc backend), as wheels for
#                  the base image's Python, by this machine's pip
#   3. deps        asyncps-deps:latest: the base image with those wheels in
#                  /opt/venv, installed by a container with no network that
#                  reads the wheelhouse from this folder, then committed: one
#                  layer, and the wheelhouse is in no layer and no build
#                  context (deploy/Dockerfile starts from this image)
#
# Needs root (debootstrap) on Debian, a Docker engine on this machine (the
# wheelhouse is mounted from here; honours DOCKER_HOST) and pip's access to
# torch's CPU build: this machine's pip configuration, or
# PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu. Settings:
# BASE_IMAGE, DEPS_IMAGE, PYTHON (the pip that downloads: python3).
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE=${BASE_IMAGE:-asyncps-base:bookworm}
DEPS_IMAGE=${DEPS_IMAGE:-asyncps-deps:latest}
PYTHON=${PYTHON:-python3}
TORCH_VERSION=2.13.0
WHEELHOUSE=deploy/.wheelhouse
LABEL=org.asyncps.deps  # on the deps image: the stamp of what it was made from

now() { date +%s.%N; }
since() { awk -v t0="$1" -v t1="$(now)" 'BEGIN {printf "%.1f", t1 - t0}'; }
fail() { echo "compose-deps: FAILED: $*" >&2; exit 1; }
step() {  # step NAME COMMAND...: run it and say how long it took
    local t0
    t0=$(now)
    "${@:2}"
    echo "compose-deps: $1 $(since "$t0") s"
}
TEMPS=()
trap '((${#TEMPS[@]} == 0)) || rm -rf "${TEMPS[@]}"' EXIT

# -- 2. wheelhouse ----------------------------------------------------------------------
# pyproject.toml's dependencies but Ray, and its build requirement (setuptools):
# what the image installs.
requirements() {
    "$PYTHON" -c 'import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))
print("\n".join([d for d in project["project"]["dependencies"] if not d.startswith("ray")]
                + project["build-system"]["requires"]))'
}

wheelhouse() {
    local reqs stamp base_id
    mapfile -t reqs < <(requirements)
    base_id=$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE")
    # Kept while what it was made for is unchanged: the base image, torch and
    # the requirements (delete deploy/.wheelhouse/.stamp to download again).
    stamp=$(printf '%s\n' "$base_id" "torch==$TORCH_VERSION" "${reqs[@]}" | sha256sum | cut -c1-16)
    if [[ -f $WHEELHOUSE/.stamp && $(cat "$WHEELHOUSE/.stamp") == "$stamp" ]] \
            && compgen -G "$WHEELHOUSE/torch-$TORCH_VERSION+cpu-*.whl" >/dev/null; then
        echo "wheelhouse up to date: $(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels, $(du -sh "$WHEELHOUSE" | cut -f1)"
        return
    fi
    # The target: the base image's Python and C library, so that the wheels
    # install there whatever Python this machine has.
    local py glibc arch
    read -r py glibc arch < <(docker run --rm --network none "$BASE_IMAGE" python3 -c \
        'import platform, sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}", platform.libc_ver()[1].replace(".", "_"), platform.machine())')
    [[ -n ${arch:-} ]] || fail "cannot run python3 in $BASE_IMAGE"
    echo "downloading wheels for Python $py, manylinux_${glibc}_$arch"
    # pip matches a --platform exactly: name every manylinux the C library runs.
    local platforms=() minor
    for ((minor = 5; minor <= ${glibc#2_}; minor++)); do platforms+=(--platform "manylinux_2_${minor}_$arch"); done
    platforms+=(--platform "manylinux1_$arch" --platform "manylinux2010_$arch" --platform "manylinux2014_$arch")
    local pip=("$PYTHON" -m pip download --quiet --disable-pip-version-check --only-binary=:all:
               --python-version "$py" "${platforms[@]}")
    pip_download() {  # pip download, less its notes on configured index folders that do not exist
        local out rc=0
        out=$("${pip[@]}" "$@" 2>&1) || rc=$?
        grep -v 'is ignored: it is neither a file nor a directory' <<<"$out" || true
        return "$rc"
    }
    local new
    new=$(mktemp -d "${TMPDIR:-/tmp}/asyncps-wheels.XXXXXX")
    TEMPS+=("$new")
    mkdir -p "$WHEELHOUSE"
    # torch first, pinned and alone: it must be the CPU build; the wheels
    # already here are reused.
    pip_download --no-deps --find-links "$WHEELHOUSE" -d "$new" "torch==$TORCH_VERSION"
    compgen -G "$new/torch-*+cpu-*.whl" >/dev/null \
        || fail "no CPU build of torch==$TORCH_VERSION found (pip config: $("$PYTHON" -m pip config list | tr '\n' ' ')); set PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu"
    pip_download --find-links "$new" --find-links "$WHEELHOUSE" -d "$new" "torch==$TORCH_VERSION" "${reqs[@]}"
    if find "$new" -maxdepth 1 \( -iname 'nvidia*' -o -iname 'triton*' -o -name '*+cu[0-9]*' \) | grep .; then
        fail "CUDA wheels in the wheelhouse (above): torch must resolve to its CPU build"
    fi
    rm -f "$WHEELHOUSE"/*.whl
    mv "$new"/*.whl "$WHEELHOUSE"/
    echo "$stamp" >"$WHEELHOUSE/.stamp"
    echo "wheelhouse: $(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels, $(du -sh "$WHEELHOUSE" | cut -f1)"
}

# -- 3. deps --------------------------------------------------------------------------------
# Run in the container, as root, with the wheelhouse at /wheels (read-only)
# and no network. torch first, pinned and alone, so that the requirements'
# range is met by its CPU build.
INSTALL='set -eu
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
python3 -m venv /opt/venv
/opt/venv/bin/pip install --quiet --no-index --find-links /wheels "torch==$1"
shift
/opt/venv/bin/pip install --quiet --no-index --find-links /wheels "$@"
if /opt/venv/bin/pip list 2>/dev/null | grep -i "^nvidia"; then
    echo "a CUDA package was installed: the image must have the CPU build of torch only" >&2; exit 1
fi
# torch'"'"'s C++ test programs and headers (for compiling extensions): ~190 MB nothing here runs
torch=$(/opt/venv/bin/python -c "import os, torch; print(os.path.dirname(torch.__file__))")
rm -rf "$torch/test" "$torch/include" "$torch"/bin/test_* "$torch"/bin/*Test "$torch"/bin/protoc*'

deps_image() {
    local reqs stamp old cid log
    mapfile -t reqs < <(requirements)
    stamp=$(printf '%s\n' "$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE")" "$(cat "$WHEELHOUSE/.stamp")" \
                "$INSTALL" "${reqs[@]}" | sha256sum | cut -c1-16)
    old=$(docker image inspect -f "{{.Id}} {{index .Config.Labels \"$LABEL\"}}" "$DEPS_IMAGE" 2>/dev/null || true)
    if [[ ${old#* } == "$stamp" ]]; then
        echo "deps image $DEPS_IMAGE up to date: $(size "$DEPS_IMAGE")"
        return
    fi
    log=$(mktemp /tmp/asyncps-deps.XXXXXX.log)
    TEMPS+=("$log")
    cid=$(docker create --network none --volume "$PWD/$WHEELHOUSE:/wheels:ro" "$BASE_IMAGE" \
              sh -c "$INSTALL" sh "$TORCH_VERSION" "${reqs[@]}")
    if ! docker start -a "$cid" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        docker rm "$cid" >/dev/null
        fail "installing the wheelhouse into $BASE_IMAGE"
    fi
    # The container's command is no image's: the base image's CMD again.
    docker commit --change "LABEL $LABEL=$stamp" --change 'CMD ["/bin/bash"]' \
        --message "deploy/compose-deps.sh: /opt/venv from deploy/.wheelhouse" "$cid" "$DEPS_IMAGE" >/dev/null
    docker rm "$cid" >/dev/null
    # The image it replaces, unless an image built on it still needs it.
    [[ -z $old ]] || docker rmi "${old%% *}" >/dev/null 2>&1 || true
    echo "deps image $DEPS_IMAGE: $(size "$DEPS_IMAGE")"
}
size() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1 / 1e6}'; }

step base deploy/base-image.sh
step wheelhouse wheelhouse
step deps deps_image
