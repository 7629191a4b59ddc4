#!/usr/bin/env bash
# make compose-test: the docker-compose cluster, end to end, on this machine.
#
#   1. engine     install Docker's engine and docker-compose from Debian's
#                 packages if missing; start a dockerd of our own (own socket,
#                 data root and exec root; no bridge, no iptables) unless one
#                 already answers on that socket
#   2. base       asyncps-base:bookworm from debootstrap (deploy/base-image.sh;
#                 kept once built)
#   3. wheelhouse deploy/.wheelhouse: the CPU build of torch from this disk and
#                 every dependency in pyproject.toml, as wheels for the base
#                 image's Python
#   4. image      asyncps:latest from deploy/Dockerfile, built with no network
#   5. cluster    docker-compose.yml + deploy/compose.host.yml: 2 shards,
#                 4 workers and the evaluator on 127.0.0.1, until the evaluator
#                 exits (a worker or shard that fails ends the wait at once)
#   6. check      runs/compose-test/summary.json: final.test_accuracy >= 0.90
#
# Then `down -v`, and the dockerd stops if this script started it
# (KEEP_ENGINE=1 leaves it running). Every service's log is printed on a
# failure; the exit code is non-zero on any failure. Safe to re-run: leftovers
# of an earlier run are removed first. Needs root (apt-get, dockerd,
# debootstrap) unless an engine already answers on the socket.
#
# Settings: ASYNCPS_DOCKER_SOCK (/run/asyncps-docker.sock),
# COMPOSE_TEST_TIMEOUT (seconds for the cluster, 600), MIN_ACCURACY (0.90),
# KEEP_ENGINE (0).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"  # dockerd, debootstrap

SOCK=${ASYNCPS_DOCKER_SOCK:-/run/asyncps-docker.sock}
DATA_ROOT=/var/lib/asyncps-docker
EXEC_ROOT=/run/asyncps-docker
DOCKERD_LOG=/var/log/asyncps-dockerd.log
export DOCKER_HOST=unix://$SOCK
export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0  # the classic builder: no buildx plugin needed
export BASE_IMAGE=asyncps-base:bookworm
IMAGE=asyncps:latest
TORCH_VERSION=2.13.0
WHEELHOUSE=deploy/.wheelhouse
PROJECT=asyncpstest
RUN_NAME=compose-test
TIMEOUT=${COMPOSE_TEST_TIMEOUT:-600}
MIN_ACCURACY=${MIN_ACCURACY:-0.90}
PYTHON=${PYTHON:-python3}

# The cluster's settings (docker-compose.yml reads them).
export ASYNCPS_IMAGE=$IMAGE ASYNCPS_RUN_NAME=$RUN_NAME ASYNCPS_BASE_IMAGE=$BASE_IMAGE
export ASYNCPS_CONFIG=./experiments/quickstart.toml ASYNCPS_USER=0:0

# -- phases and their timings --------------------------------------------------------
TIMINGS=()
now() { date +%s.%N; }
since() { awk -v t0="$1" -v t1="$(now)" 'BEGIN {printf "%.1f", t1 - t0}'; }
started_at=$(now)
PHASE="" PHASE_T0=""
phase() {  # phase NAME COMMAND...: run it, time it, remember the time
    PHASE=$1 PHASE_T0=$(now)
    shift
    echo "=== $PHASE"
    "$@"
    TIMINGS+=("$(printf '%-10s %6s s' "$PHASE" "$(since "$PHASE_T0")")")
    echo "=== $PHASE: $(since "$PHASE_T0") s"
    PHASE=""
}
print_timings() {
    echo "--- timings"
    printf '  %s\n' "${TIMINGS[@]}"
    [[ -z $PHASE ]] || printf '  %-10s %6s s (failed)\n' "$PHASE" "$(since "$PHASE_T0")"
    printf '  %-10s %6s s\n' total "$(since "$started_at")"
}
fail() { echo "compose-test: FAILED: $*" >&2; exit 1; }
TEMP_DIRS=()

# -- 1. engine -----------------------------------------------------------------------
STARTED_ENGINE=0
compose_cmd=()
engine_answers() { docker info >/dev/null 2>&1; }

install_engine() {
    local need=()
    command -v dockerd >/dev/null || need+=(docker.io)
    command -v docker >/dev/null || need+=(docker.io)
    docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null || need+=(docker-compose)
    if ((${#need[@]})); then
        echo "installing ${need[*]} (apt-get)"
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
    fi
}

start_engine() {
    if engine_answers; then
        echo "a Docker engine answers on $SOCK: used as it is"
        return
    fi
    install_engine
    mkdir -p "$DATA_ROOT" "$EXEC_ROOT"
    echo "starting dockerd on $SOCK (data root $DATA_ROOT, log $DOCKERD_LOG)"
    # setsid: its own session, so that nothing aimed at this script's process
    # group reaches it; we stop it by its pid file.
    setsid dockerd --host "$DOCKER_HOST" --data-root "$DATA_ROOT" --exec-root "$EXEC_ROOT" \
        --pidfile "$EXEC_ROOT/dockerd.pid" --bridge=none --iptables=false --ip6tables=false \
        >>"$DOCKERD_LOG" 2>&1 </dev/null &
    STARTED_ENGINE=1
    for _ in $(seq 60); do
        engine_answers && break
        kill -0 $! 2>/dev/null || { tail -n 30 "$DOCKERD_LOG" >&2; fail "dockerd exited"; }
        sleep 1
    done
    engine_answers || { tail -n 30 "$DOCKERD_LOG" >&2; fail "dockerd did not answer on $SOCK within 60 s"; }
}

choose_compose() {
    if docker compose version >/dev/null 2>&1; then
        compose_cmd=(docker compose)
    else
        command -v docker-compose >/dev/null || install_engine
        compose_cmd=(docker-compose)
    fi
    echo "engine $(docker version -f '{{.Server.Version}}'); compose: ${compose_cmd[*]}" \
         "$("${compose_cmd[@]}" version --short 2>/dev/null || true)"
}

stop_engine() {
    [[ $STARTED_ENGINE == 1 && ${KEEP_ENGINE:-0} != 1 ]] || return 0
    local pid
    pid=$(cat "$EXEC_ROOT/dockerd.pid" 2>/dev/null) || return 0
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || return 0; sleep 1; done
    echo "dockerd ($pid) still running after 30 s" >&2
}

# -- 3. wheelhouse --------------------------------------------------------------------
build_wheelhouse() {
    # The target: the base image's Python and C library, so that the wheels
    # install there whatever Python this host has.
    local target py glibc arch new
    target=$(docker run --rm --network none "$BASE_IMAGE" python3 -c \
        'import platform, sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}", platform.libc_ver()[1].replace(".", "_"), platform.machine())')
    read -r py glibc arch <<<"$target"
    echo "wheels for Python $py, manylinux_${glibc}_$arch"
    # pip matches a --platform exactly: name every manylinux the C library runs.
    local platforms=() minor
    for ((minor = 5; minor <= ${glibc#2_}; minor++)); do platforms+=(--platform "manylinux_2_${minor}_$arch"); done
    platforms+=(--platform "manylinux1_$arch" --platform "manylinux2010_$arch" --platform "manylinux2014_$arch")
    # Kept while what it was made for is unchanged: the target, torch and
    # pyproject.toml's requirements (delete deploy/.wheelhouse/.stamp to refresh).
    mapfile -t reqs < <("$PYTHON" -c 'import tomllib; d = tomllib.load(open("pyproject.toml", "rb")); print("\n".join(d["project"]["dependencies"] + d["build-system"]["requires"]))')
    local stamp
    stamp=$(printf '%s\n' "$target" "torch==$TORCH_VERSION" "${reqs[@]}" | sha256sum | cut -c1-16)
    if [[ -f $WHEELHOUSE/.stamp && $(cat "$WHEELHOUSE/.stamp") == "$stamp" ]] \
            && compgen -G "$WHEELHOUSE/torch-$TORCH_VERSION+cpu-*.whl" >/dev/null; then
        echo "wheelhouse up to date: $(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels, $(du -sh "$WHEELHOUSE" | cut -f1)"
        return
    fi
    local pip=("$PYTHON" -m pip download --quiet --disable-pip-version-check --only-binary=:all:
               --python-version "$py" "${platforms[@]}")
    pip_download() {  # pip download, less its notes on configured index folders that do not exist
        local out rc=0
        out=$("${pip[@]}" "$@" 2>&1) || rc=$?
        grep -v 'is ignored: it is neither a file nor a directory' <<<"$out" || true
        return "$rc"
    }
    new=$(mktemp -d "${TMPDIR:-/tmp}/asyncps-wheels.XXXXXX")
    TEMP_DIRS+=("$new")
    mkdir -p "$WHEELHOUSE"
    # torch first, pinned and alone: pip's configured find-links hold its CPU
    # build; the wheels already here are reused.
    pip_download --no-deps --find-links "$WHEELHOUSE" -d "$new" "torch==$TORCH_VERSION"
    ls "$new"/torch-*+cpu-*.whl >/dev/null 2>&1 || fail "no CPU build of torch==$TORCH_VERSION found (pip config: $("$PYTHON" -m pip config list | tr '\n' ' '))"
    # Then the project's dependencies and build requirements, as read from
    # pyproject.toml above, with torch pinned to the wheel above.
    pip_download --find-links "$new" --find-links "$WHEELHOUSE" -d "$new" "torch==$TORCH_VERSION" "${reqs[@]}"
    if find "$new" -maxdepth 1 \( -iname 'nvidia*' -o -iname 'triton*' -o -name '*+cu[0-9]*' \) | grep .; then
        fail "CUDA wheels in the wheelhouse (above): torch must resolve to the local CPU build"
    fi
    # Replace the wheels only when they changed, so that the image's
    # dependency layer stays cached (the folder is gitignored).
    if ! diff -q <(cd "$new" && ls -- *.whl) <(cd "$WHEELHOUSE" && ls -- *.whl 2>/dev/null) >/dev/null; then
        rm -f "$WHEELHOUSE"/*.whl
        mv "$new"/*.whl "$WHEELHOUSE"/
    fi
    rm -rf "$new"
    echo "$stamp" >"$WHEELHOUSE/.stamp"
    echo "$(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels, $(du -sh "$WHEELHOUSE" | cut -f1)"
}

# -- 4. image -------------------------------------------------------------------------
build_image() {
    local log
    log=$(mktemp /tmp/asyncps-build.XXXXXX.log)
    if ! docker build --network none --build-arg "BASE_IMAGE=$BASE_IMAGE" \
            -f deploy/Dockerfile -t "$IMAGE" . >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        fail "docker build (full log: $log)"
    fi
    rm -f "$log"
    docker run --rm --network none "$IMAGE" asyncps --help | grep -q -w serve \
        || fail "the image's asyncps has no 'serve' command"
    echo "image $IMAGE: $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
}

# -- 5. cluster -----------------------------------------------------------------------
compose() {
    "${compose_cmd[@]}" -p "$PROJECT" -f docker-compose.yml -f deploy/compose.host.yml "$@"
}

CLUSTER_UP=0
states() {  # one line per container: SERVICE STATUS EXITCODE
    local ids
    ids=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")
    [[ -n $ids ]] || return 0
    # shellcheck disable=SC2086
    docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} {{.State.ExitCode}}' $ids | sort
}

run_cluster() {
    compose down -v --remove-orphans >/dev/null 2>&1 || true
    rm -rf "runs/$RUN_NAME"
    mkdir -p runs
    CLUSTER_UP=1
    compose up -d --no-build
    local t0=$SECONDS next_report=30 service status code lines evaluator=""
    while true; do
        lines=$(states)
        evaluator=$(awk '$1 == "evaluator" && $2 == "exited" {print $3}' <<<"$lines")
        [[ -n $evaluator ]] && break
        while read -r service status code; do
            case $service in
                worker*) [[ $status == exited && $code != 0 ]] && fail "$service exited with code $code" ;;
                shard*) [[ $status == exited ]] && fail "$service exited (code $code) before the evaluator" ;;
            esac
        done <<<"$lines"
        ((SECONDS - t0 < TIMEOUT)) || fail "the evaluator did not finish within $TIMEOUT s"
        if ((SECONDS - t0 >= next_report)); then
            echo "  $((SECONDS - t0)) s: $(awk '{printf "%s %s%s  ", $1, $2, ($2 == "exited" ? "(" $3 ")" : "")}' <<<"$lines")"
            next_report=$((next_report + 30))
        fi
        sleep 2
    done
    echo "evaluator exited with code $evaluator after $((SECONDS - t0)) s"
    [[ $evaluator == 0 ]] || fail "evaluator exited with code $evaluator"
    # Each worker exits once it has told every shard it is done.
    for _ in $(seq 30); do
        awk '$1 ~ /^worker/ && $2 != "exited" {found = 1} END {exit !found}' <<<"$(states)" || break
        sleep 1
    done
    lines=$(states)
    awk '$1 ~ /^worker/ && ($2 != "exited" || $3 != 0) {print; bad = 1} END {exit bad}' <<<"$lines" \
        || fail "workers did not all exit 0"
}

# -- 6. check -------------------------------------------------------------------------
check_run() {
    local summary=runs/$RUN_NAME/summary.json
    [[ -f $summary ]] || fail "no $summary"
    "$PYTHON" -c 'import json, sys
accuracy = json.load(open(sys.argv[1]))["final"]["test_accuracy"]
print(f"final test_accuracy {accuracy:.4f} (at least {sys.argv[2]} wanted)")
sys.exit(0 if accuracy >= float(sys.argv[2]) else 1)' "$summary" "$MIN_ACCURACY" \
        || fail "test accuracy below $MIN_ACCURACY"
    ls "runs/$RUN_NAME"
}

# -- teardown, on every exit --------------------------------------------------------------
finish() {
    local code=$?
    set +e
    if ((CLUSTER_UP)); then
        if ((code != 0)); then
            echo "--- containers"
            states
            echo "--- logs of every service"
            compose logs --no-color --timestamps
        fi
        compose down -v --remove-orphans >/dev/null 2>&1 || echo "compose down failed" >&2
    fi
    stop_engine
    ((${#TEMP_DIRS[@]})) && rm -rf "${TEMP_DIRS[@]}"
    print_timings
    # The closing line, in the plain form CI reads as a test count.
    if ((code == 0)); then echo "compose-test: 1 passed, 0 failed"; else echo "compose-test: 0 passed, 1 failed"; fi
    exit "$code"
}
trap finish EXIT
trap 'exit 130' INT TERM

phase engine start_engine
choose_compose
phase base deploy/base-image.sh
phase wheelhouse build_wheelhouse
phase image build_image
phase cluster run_cluster
phase check check_run
