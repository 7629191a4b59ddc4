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
#                 4 workers and the evaluator on 127.0.0.1, until shard 1 has
#                 applied KILL_AT updates; then SIGKILL to its asyncps process,
#                 as a crash would (a worker or shard that fails ends this
#                 wait and the next two at once)
#   6. crash      until Docker's restart policy has brought shard 1 back and
#                 it serves again
#   7. finish     until the evaluator exits, and then the workers (0 wanted)
#   8. check      runs/compose-test/summary.json: final.test_accuracy >= 0.90;
#                 the run did not fail; one event "shard 1 was restarted; it
#                 resumed from its checkpoint at version V" (its checkpoints
#                 outlived its process); per shard the pushes acknowledged,
#                 applied and lost (printed; shard 0, never killed, lost none);
#                 the time from the kill to that event (printed); Docker's
#                 RestartCount is 1 for shard 1 and 0 for every other container
#
# Then `down -v`, and the dockerd stops if this script started it
# (KEEP_ENGINE=1 leaves it running). Every service's log is printed on a
# failure; the exit code is non-zero on any failure. Safe to re-run: leftovers
# of an earlier run are removed first. Needs root: apt-get, dockerd and
# debootstrap, unless an engine already answers on the socket; and always the
# SIGKILL to a shard's process from this host (/proc of a container's init).
#
# Settings: ASYNCPS_DOCKER_SOCK (/run/asyncps-docker.sock),
# COMPOSE_TEST_TIMEOUT (seconds for the cluster, 600), MIN_ACCURACY (0.90),
# KILL_AT (the version shard 1 reaches before the kill, 450: every worker is
# training, the shard has checkpoints, and ~1200 updates come in all),
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
KILL_SHARD=1  # the shard that crashes
SHARD_PORTS=(50051 50052)  # deploy/compose.host.yml's
KILL_AT=${KILL_AT:-450}  # between two checkpoints (every 100): some updates are lost, and counted
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
TEMPS=()  # temporary files and folders, removed at exit

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
    TEMPS+=("$new")
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

# -- 5. cluster, 6. crash, 7. finish ----------------------------------------------------
compose() {
    "${compose_cmd[@]}" -p "$PROJECT" -f docker-compose.yml -f deploy/compose.host.yml "$@"
}

CLUSTER_UP=0 CLUSTER_T0=0 NEXT_REPORT=30 EVALUATOR=""
WAITER_PID="" WAIT_LOG="" REACHED="" KILLED_AT=""
states() {  # one line per container: SERVICE STATUS EXITCODE RESTARTS
    local ids
    ids=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")
    [[ -n $ids ]] || return 0
    # shellcheck disable=SC2086
    docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} {{.State.ExitCode}} {{.RestartCount}}' $ids | sort
}
container_of() {  # container_of SERVICE: its container's id
    docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" --filter "label=com.docker.compose.service=$1"
}
VICTIM=shard$KILL_SHARD

watch_cluster() {  # watch_cluster WHAT CONDITION...: poll until CONDITION succeeds; fail at once
    local what=$1 service status code restarts lines  # when a worker or shard fails, or at TIMEOUT
    shift
    while ! "$@"; do
        lines=$(states)
        while read -r service status code restarts; do
            case $service in
                worker*) [[ $status == exited && $code != 0 ]] && fail "$service exited with code $code" ;;
                # A crashed shard is "restarting", then "running" again; "exited"
                # means it stopped for good (or its restart policy gave up).
                shard*) [[ $status == exited ]] \
                    && fail "$service exited (code $code; restarted $restarts times) before the evaluator" ;;
            esac
        done <<<"$lines"
        ((SECONDS - CLUSTER_T0 < TIMEOUT)) || fail "$what within $TIMEOUT s of the cluster's start"
        if ((SECONDS - CLUSTER_T0 >= NEXT_REPORT)); then
            echo "  $((SECONDS - CLUSTER_T0)) s: $(awk '{printf "%s %s%s%s  ", $1, $2, ($2 == "exited" ? "(" $3 ")" : ""),
                                                    ($4 > 0 ? " restarts=" $4 : "")}' <<<"$lines")"
            NEXT_REPORT=$((NEXT_REPORT + 30))
        fi
        sleep 1
    done
}

# Run inside the victim's container (its grpc and protos; no torch, so it
# starts in a moment): wait, on the shard's own versioned pull (no polling),
# until it has applied KILL_AT updates: every worker is training by then,
# and the shard has checkpoints to resume from. A fresh container must have
# started from nothing: a checkpoint there would be an earlier run's.
WAIT_FOR_VERSION='import os, sys, grpc
from protos import ps_pb2, ps_pb2_grpc
address, at, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
token = os.environ.get("ASYNCPS_TOKEN")
metadata = [("authorization", f"Bearer {token}")] if token else None
with grpc.insecure_channel(address) as channel:
    stub = ps_pb2_grpc.ParameterServerStub(channel)
    try:
        status = stub.Status(ps_pb2.StatusRequest(), metadata=metadata, timeout=60, wait_for_ready=True)
        if status.restored != -1:
            sys.exit(f"shard {status.shard} in a new container resumed from a checkpoint at version {status.restored}: "
                     "the state of an earlier run outlived `down`")
        next(stub.Pull(ps_pb2.PullRequest(min_version=at, timeout=seconds), metadata=metadata, timeout=seconds + 10))
        status = stub.Status(ps_pb2.StatusRequest(), metadata=metadata, timeout=10)
    except grpc.RpcError as err:
        sys.exit(f"shard at {address} did not reach version {at}: {err.code().name}: {err.details()}")
if status.closed or status.workers_done:
    sys.exit(f"shard {status.shard} reached version {at} only at the end of the run (at version {status.version}, "
             f"workers {list(status.workers_done)} have finished): a kill now is not in the middle of training")
print(status.version)'

# The victim's asyncps process, as a pid on this host: the child of its
# container's init (tini, init: true) whose command is `asyncps serve`.
serve_pid() {  # serve_pid CONTAINER
    local tini pid cmdline found=()
    tini=$(docker inspect -f '{{.State.Pid}}' "$1")
    [[ -r /proc/$tini/task/$tini/children ]] \
        || fail "cannot see $VICTIM's processes (/proc/$tini): the Docker engine must run on this machine"
    for pid in $(cat "/proc/$tini/task/$tini/children"); do
        cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || continue
        [[ $cmdline == *"asyncps serve "* ]] && found+=("$pid")
    done
    ((${#found[@]} == 1)) \
        || fail "expected one 'asyncps serve' process under $VICTIM's init (pid $tini), found ${#found[@]}"
    echo "${found[0]}"
}

# SIGKILL, from this host, to the shard's asyncps process as a crash (or the
# OOM killer) would: tini exits 137, and the restart policy applies. Not
# `docker kill`: Docker counts that as a manual stop, to which restart
# policies do not apply (the container stays exited; tried on Engine 20.10).
# The kill follows the waiting pull at once, in the background job itself:
# the whole run takes seconds of training, and a poll's delay would let the
# shard run on by hundreds of updates.
start_cluster() {
    compose down -v --remove-orphans >/dev/null 2>&1 || true
    # Host networking: the shards' ports must be free. gRPC servers bind with
    # SO_REUSEPORT, so a shard left over from another cluster would not make
    # ours fail to start: it would silently take a share of the connections.
    local port
    for port in "${SHARD_PORTS[@]}"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            fail "something already listens on 127.0.0.1:$port (another asyncps cluster?); stop it first"
        fi
    done
    rm -rf "runs/$RUN_NAME"
    mkdir -p runs
    CLUSTER_UP=1
    # The shards first, and the wait for KILL_AT on them, so that the wait is
    # in place before any worker starts: training takes seconds.
    compose up -d --no-build shard0 shard1
    CLUSTER_T0=$SECONDS NEXT_REPORT=30
    WAIT_LOG=$(mktemp /tmp/asyncps-wait.XXXXXX.log)
    TEMPS+=("$WAIT_LOG")
    local cid
    cid=$(container_of "$VICTIM")
    (
        # shellcheck disable=SC2016  # $ASYNCPS_PORT is the container's
        docker exec "$cid" sh -c 'exec python -c "$1" "127.0.0.1:$ASYNCPS_PORT" "$2" "$3"' \
            sh "$WAIT_FOR_VERSION" "$KILL_AT" "$TIMEOUT" || exit
        pid=$(serve_pid "$cid") || exit
        kill -KILL "$pid"
        now
        echo "$pid"
    ) >"$WAIT_LOG" 2>&1 &
    WAITER_PID=$!
    compose up -d --no-build  # the workers and the evaluator, once the shards are healthy
    watch_cluster "shard $KILL_SHARD did not reach version $KILL_AT" killed
}
killed() {  # the background job above has seen KILL_AT and sent SIGKILL
    kill -0 "$WAITER_PID" 2>/dev/null && return 1
    local rc=0 pid
    wait "$WAITER_PID" || rc=$?
    WAITER_PID=""
    ((rc == 0)) || fail "waiting for shard $KILL_SHARD to reach version $KILL_AT: $(cat "$WAIT_LOG")"
    # The job's last three lines (anything the engine or grpc logged comes before).
    { read -r REACHED && read -r KILLED_AT && read -r pid; } < <(tail -n 3 "$WAIT_LOG")
    echo "shard $KILL_SHARD at version $REACHED $((SECONDS - CLUSTER_T0)) s after it started:" \
         "SIGKILL to its asyncps serve (pid $pid on this host)"
}

crash_shard() {  # until Docker has restarted the victim and it serves again
    local cid started
    cid=$(container_of "$VICTIM")
    watch_cluster "$VICTIM did not come back" shard_serving_again "$cid"
    started=$(date -d "$(docker inspect -f '{{.State.StartedAt}}' "$cid")" +%s.%N)
    echo "$VICTIM restarted by Docker $(awk -v a="$KILLED_AT" -v b="$started" 'BEGIN {printf "%.1f", b - a}') s" \
         "after the kill, serving again after $(since "$KILLED_AT") s"
}
shard_serving_again() {  # shard_serving_again CONTAINER: restarted, running, and its health check passes
    local status restarts
    read -r status restarts <<<"$(docker inspect -f '{{.State.Status}} {{.RestartCount}}' "$1")"
    [[ $status == running ]] && ((restarts >= 1)) || return 1
    # shellcheck disable=SC2016
    docker exec "$1" sh -c 'exec python -m lab.backends.health "127.0.0.1:$ASYNCPS_PORT"' >/dev/null 2>&1
}

finish_run() {
    watch_cluster "the evaluator did not finish" evaluator_exited
    echo "evaluator exited with code $EVALUATOR after $((SECONDS - CLUSTER_T0)) s"
    [[ $EVALUATOR == 0 ]] || fail "evaluator exited with code $EVALUATOR"
    # Each worker exits once it has told every shard it is done.
    for _ in $(seq 30); do
        awk '$1 ~ /^worker/ && $2 != "exited" {found = 1} END {exit !found}' <<<"$(states)" || break
        sleep 1
    done
    awk '$1 ~ /^worker/ && ($2 != "exited" || $3 != 0) {print; bad = 1} END {exit bad}' <<<"$(states)" \
        || fail "workers did not all exit 0"
}
evaluator_exited() {
    EVALUATOR=$(states | awk '$1 == "evaluator" && $2 == "exited" {print $3}')
    [[ -n $EVALUATOR ]]
}

# -- 8. check -------------------------------------------------------------------------
check_run() {
    local summary=runs/$RUN_NAME/summary.json
    [[ -f $summary ]] || fail "no $summary"
    "$PYTHON" -c 'import json, sys
accuracy = json.load(open(sys.argv[1]))["final"]["test_accuracy"]
print(f"final test_accuracy {accuracy:.4f} (at least {sys.argv[2]} wanted)")
sys.exit(0 if accuracy >= float(sys.argv[2]) else 1)' "$summary" "$MIN_ACCURACY" \
        || fail "test accuracy below $MIN_ACCURACY"
    "$PYTHON" -c "$CHECK_RESTART" "runs/$RUN_NAME" "$KILL_SHARD" "$KILLED_AT" "$REACHED" || fail "the crash and restart (above)"
    # Docker restarted the victim once, and nothing else.
    local service status code restarts
    while read -r service status code restarts; do
        local want=0
        [[ $service == "$VICTIM" ]] && want=1
        [[ $restarts == "$want" ]] || fail "$service was restarted $restarts times by Docker ($want expected)"
    done <<<"$(states)"
    echo "restart counts: $VICTIM 1, every other container 0"
    ls "runs/$RUN_NAME"
}

# The run directory after the crash: the run ended without a failure, the
# evaluator saw the victim's new life resume from a checkpoint (not from
# version 0: its checkpoints outlived the process), and every shard's
# acknowledged pushes are accounted for; a shard that never died lost none.
# The event's time is in the evaluator's clock (seconds since its start);
# the workers' own files hold the same train records in wall time, which
# gives that start.
CHECK_RESTART='import json, re, statistics, sys
from pathlib import Path
run, victim, killed_at, reached = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
summary = json.loads((run / "summary.json").read_text())
problems = []
failed = summary.get("failed")
if failed:
    problems.append(f"the run failed: {failed}")
print("events:", *(f"  {e}" for e in summary["events"]), sep="\n")
restarts = [e for e in summary["events"] if re.match(r"shard \d+ was restarted;", e)]
pattern = rf"shard {victim} was restarted; it resumed from its checkpoint at version (\d+)(, then replayed \d+ logged pushes)?"
resumed = re.fullmatch(pattern, restarts[0]) if len(restarts) == 1 else None
if resumed is None:
    problems.append(f"expected one event of shard {victim} resuming from its checkpoint "
                    f"(shard {victim} was restarted; it resumed from its checkpoint at version V), found {restarts}")
else:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    relative = {(r["worker"], r["step"]): r["time"] for r in records if r["kind"] == "train"}
    offsets = [r["time"] - relative[r["worker"], r["step"]]
               for part in sorted((run / "workers").glob("worker-*.jsonl"))
               for r in map(json.loads, part.read_text().splitlines())
               if r["kind"] == "train" and (r["worker"], r["step"]) in relative]
    if not offsets:
        sys.exit(f"no train record of {run}/workers/ is in metrics.jsonl: the event cannot be dated")
    event = next(r["time"] for r in records if r["kind"] == "event" and r["message"] == restarts[0])
    delay = statistics.median(offsets) + event - killed_at
    print(f"shard {victim}: killed once past version {reached}, resumed from its checkpoint at version "
          f"{resumed.group(1)} (its lost, below: the updates it had applied since); the evaluator recorded the "
          f"restart {delay:.1f} s after the kill")
    if delay <= 0:
        problems.append(f"the restart event is dated {-delay:.1f} s before the kill")
print("shard  acknowledged  applied  lost")
for shard, account in sorted(summary["shards"].items(), key=lambda item: int(item[0])):
    acknowledged, applied, lost = account["acknowledged"], account["applied"], account["lost"]
    print(f"{shard:>5}  {acknowledged:>12}  {applied:>7}  {lost}")
    if lost is None:
        problems.append(f"shard {shard}: its final parameters were not read, so its losses are unknown")
    elif int(shard) != victim and lost != 0:
        problems.append(f"shard {shard} never died, yet {lost} of its applied pushes are not in its final version")
for problem in problems:
    print("problem:", problem, file=sys.stderr)
sys.exit(1 if problems else 0)'

# -- teardown, on every exit --------------------------------------------------------------
finish() {
    local code=$?
    set +e
    [[ -n $WAITER_PID ]] && kill "$WAITER_PID" 2>/dev/null
    if ((CLUSTER_UP)); then
        if ((code != 0)); then
            echo "--- containers (service, status, exit code, restarts)"
            states
            echo "--- logs of every service"
            compose logs --no-color --timestamps
        fi
        compose down -v --remove-orphans >/dev/null 2>&1 || echo "compose down failed" >&2
    fi
    stop_engine
    ((${#TEMPS[@]})) && rm -rf "${TEMPS[@]}"
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
phase cluster start_cluster
phase crash crash_shard
phase finish finish_run
phase check check_run
