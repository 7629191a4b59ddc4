#!/usr/bin/env bash
# make compose-test: README.md's docker-compose commands, as written there,
# end to end on a Docker engine of the test's own that leaves this machine's
# network, and any other engine, as it found them.
#
#   1. engine   install Debian's docker.io and docker-compose if missing;
#               start a dockerd of the test's own in a network namespace of
#               its own (asyncps-docker: the engine's docker0, the project's
#               network and every container's interfaces are there, not on
#               this machine), with its own socket, data root, exec root,
#               config file and containerd namespace; unless one already
#               answers on that socket. A docker0 on this machine (one is
#               made for the test when there is none, and removed after)
#               must survive it, and no docker0, br-* or veth* link may come
#               or go here: checked once the engine runs, and at the end
#   2. deps     make compose-deps: the base image, the wheelhouse and the
#               deps image (each skipped when up to date)
#   3. context  what `docker-compose build` sends, measured by
#               docker-compose's own docker-py with .dockerignore: at most
#               CONTEXT_LIMIT_MB
#   4. image    docker-compose build (offline: the engine's namespace has
#               no route out)
#   5. cluster  docker-compose up -d: experiments/quickstart.toml's 2 shards,
#               4 workers and the evaluator; once shard 1 has applied KILL_AT
#               updates, SIGKILL to its asyncps process, as a crash would (a
#               worker or shard that fails ends this wait and the next two)
#   6. crash    until Docker's restart policy has brought shard 1 back and
#               it serves again
#   7. finish   docker wait on the evaluator (0 wanted), then the workers;
#               docker-compose logs evaluator: a line per evaluation and the
#               final accuracy
#   8. check    runs/compose-test/summary.json: final.test_accuracy >=
#               MIN_ACCURACY; the run did not fail; one event "shard 1 was
#               restarted; it resumed from its checkpoint at version V"; per
#               shard the pushes acknowledged, applied and lost (shard 0,
#               never killed, lost none); the time from the kill to that
#               event; Docker's RestartCount is 1 for shard 1, 0 elsewhere
#
# Then docker-compose down, the engine's dangling images removed, what is
# kept said with its size (the images and the wheelhouse: the next run
# reuses them), the dockerd stopped and its namespace removed if this script
# started them (KEEP_ENGINE=1 leaves them), and the timings of every phase.
# Every service's log is printed on a failure; the exit code is non-zero on
# any failure. Needs root: apt-get, ip netns, dockerd and debootstrap.
#
# Settings: ASYNCPS_DOCKER_SOCK (/run/asyncps-docker.sock),
# COMPOSE_TEST_TIMEOUT (seconds for the cluster, 600), MIN_ACCURACY (0.90),
# KILL_AT (the version shard 1 reaches before the kill, 450: every worker is
# training, the shard has checkpoints, and ~1200 updates come in all),
# CONTEXT_LIMIT_MB (5), KEEP_ENGINE (0).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"  # dockerd, debootstrap, ip

SOCK=${ASYNCPS_DOCKER_SOCK:-/run/asyncps-docker.sock}
NETNS=asyncps-docker
DATA_ROOT=/var/lib/asyncps-docker
EXEC_ROOT=/run/asyncps-docker
DOCKERD_LOG=/var/log/asyncps-dockerd.log
export DOCKER_HOST=unix://$SOCK
export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0  # the classic builder: no buildx plugin needed
# docker-compose.yml and the images as the README's commands make them.
unset COMPOSE_FILE COMPOSE_PROFILES ASYNCPS_IMAGE ASYNCPS_DEPS_IMAGE ASYNCPS_USER BASE_IMAGE DEPS_IMAGE
# The README's commands read these: a project and a run directory of the
# test's own, so that a cluster of the user's (quickstart) is left alone.
export COMPOSE_PROJECT_NAME=asyncpstest ASYNCPS_RUN_NAME=compose-test
RUN_NAME=$ASYNCPS_RUN_NAME
TIMEOUT=${COMPOSE_TEST_TIMEOUT:-600}
MIN_ACCURACY=${MIN_ACCURACY:-0.90}
CONTEXT_LIMIT_MB=${CONTEXT_LIMIT_MB:-5}
KILL_SHARD=1  # the shard that crashes
VICTIM=shard$KILL_SHARD
KILL_AT=${KILL_AT:-450}  # between two checkpoints (every 100): some updates are lost, and counted
PYTHON=${PYTHON:-python3}
export MAKEFLAGS="${MAKEFLAGS:-} --no-print-directory"  # `make compose-deps` below, under `make compose-test`

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
    ((${#TIMINGS[@]} == 0)) || printf '  %s\n' "${TIMINGS[@]}"
    [[ -z $PHASE ]] || printf '  %-10s %6s s (failed)\n' "$PHASE" "$(since "$PHASE_T0")"
    printf '  %-10s %6s s\n' total "$(since "$started_at")"
}
fail() { echo "compose-test: FAILED: $*" >&2; exit 1; }
TEMPS=()  # temporary files and folders, removed at exit

# -- 1. engine -----------------------------------------------------------------------
STARTED_ENGINE=0 MADE_NETNS=0 MADE_DOCKER0=0 DOCKER0_INDEX="" HOST_LINKS=""
engine_answers() { docker info >/dev/null 2>&1; }

install_engine() {
    local need=()
    command -v dockerd >/dev/null || need+=(docker.io)
    command -v docker >/dev/null || need+=(docker.io)
    command -v docker-compose >/dev/null || need+=(docker-compose)
    if ((${#need[@]})); then
        echo "installing ${need[*]} (apt-get)"
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
    fi
}

# This machine's links that a Docker engine makes or removes.
docker_links() { ip -o link show | awk -F': ' '$2 ~ /^(docker|br-|veth)/ {sub(/@.*/, "", $2); print $2}' | sort; }

# A Docker engine started with --bridge=none deletes the docker0 it finds at
# start-up (moby's removeDefaultBridgeInterface), and one with a bridge takes
# docker0 over: both would break the engine that docker0 is this machine's
# for. So the test's engine has a network namespace of its own, and this
# checks that this machine's docker0 outlives it.
guard_docker0() {
    if ! ip link show docker0 >/dev/null 2>&1; then
        ip link add docker0 type bridge
        MADE_DOCKER0=1
        echo "made a docker0 bridge here, as a machine with Docker has one (removed at the end): it must survive the test"
    fi
    DOCKER0_INDEX=$(cat /sys/class/net/docker0/ifindex)
    HOST_LINKS=$(docker_links)
}
check_host_network() {  # check_host_network WHEN: docker0 is the same link, and no Docker link came or went
    [[ -n $DOCKER0_INDEX ]] || return 0
    local index links
    index=$(cat /sys/class/net/docker0/ifindex 2>/dev/null || true)
    links=$(docker_links)
    if [[ $index != "$DOCKER0_INDEX" ]]; then
        echo "compose-test: this machine's docker0 (link $DOCKER0_INDEX) is ${index:+replaced by link $index}${index:-gone} $1" >&2
        return 1
    fi
    if [[ $links != "$HOST_LINKS" ]]; then
        echo "compose-test: this machine's Docker links changed $1 (< before, > now):" >&2
        diff <(echo "$HOST_LINKS") <(echo "$links") | grep '^[<>]' >&2
        return 1
    fi
    echo "this machine's docker0 and Docker links are as they were $1"
}

start_engine() {
    guard_docker0
    if engine_answers; then
        echo "a Docker engine answers on $SOCK: used as it is"
    else
        install_engine
        if [[ ! -e /run/netns/$NETNS ]]; then
            ip netns add "$NETNS"
            MADE_NETNS=1
        fi
        ip -n "$NETNS" link set lo up
        mkdir -p "$DATA_ROOT" "$EXEC_ROOT"
        # Not /etc/docker/daemon.json: that file is this machine's engine's.
        echo '{}' >"$EXEC_ROOT/daemon.json"
        echo "starting dockerd on $SOCK in network namespace $NETNS (data root $DATA_ROOT, log $DOCKERD_LOG)"
        # setsid: its own session, so that nothing aimed at this script's
        # process group reaches it; we stop it by its pid file. Its own
        # containerd namespace, should it share this machine's containerd.
        setsid nsenter --net="/run/netns/$NETNS" dockerd --host "$DOCKER_HOST" --data-root "$DATA_ROOT" \
            --exec-root "$EXEC_ROOT" --pidfile "$EXEC_ROOT/dockerd.pid" --config-file "$EXEC_ROOT/daemon.json" \
            --containerd-namespace asyncps --containerd-plugins-namespace asyncps-plugins \
            --iptables=false --ip6tables=false >>"$DOCKERD_LOG" 2>&1 </dev/null &
        STARTED_ENGINE=1
        for _ in $(seq 60); do
            engine_answers && break
            kill -0 $! 2>/dev/null || { tail -n 30 "$DOCKERD_LOG" >&2; fail "dockerd exited"; }
            sleep 0.5
        done
        engine_answers || { tail -n 30 "$DOCKERD_LOG" >&2; fail "dockerd did not answer on $SOCK within 30 s"; }
    fi
    install_engine  # docker-compose, with an engine that was there already
    echo "engine $(docker version -f '{{.Server.Version}}'), $(docker-compose version --short 2>/dev/null | sed 's/^/docker-compose /')"
    check_host_network "once the engine runs" || fail "the test's engine changed this machine's network (above)"
}

stop_engine() {
    [[ $STARTED_ENGINE == 1 && ${KEEP_ENGINE:-0} != 1 ]] || return 0
    local pid=""
    if pid=$(cat "$EXEC_ROOT/dockerd.pid" 2>/dev/null) && kill "$pid" 2>/dev/null; then
        for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$pid" 2>/dev/null && echo "dockerd ($pid) still running after 30 s" >&2
    fi
    if ((MADE_NETNS)) && ! kill -0 "$pid" 2>/dev/null; then
        ip netns del "$NETNS"
    fi
}

# -- 3. context -----------------------------------------------------------------------
# The context `docker-compose build` sends, as its docker-py makes it
# (.dockerignore applied; the Dockerfile always in): size, and the largest.
CONTEXT_SIZE='import os, sys
from docker.utils.build import exclude_paths
root, dockerfile, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])
with open(os.path.join(root, ".dockerignore")) as f:
    patterns = [line.strip() for line in f if line.strip() and not line.startswith("#")]
files = [p for p in exclude_paths(root, patterns, dockerfile=dockerfile) if os.path.isfile(os.path.join(root, p))]
sizes = sorted(((os.path.getsize(os.path.join(root, p)), p) for p in files), reverse=True)
total = sum(size for size, _ in sizes) / 1e6
print(f"build context: {len(files)} files, {total:.2f} MB (at most {limit:g} MB); the largest:",
      ", ".join(f"{p} {size / 1e3:.0f} kB" for size, p in sizes[:3]))
sys.exit(0 if total <= limit else 1)'

measure_context() {
    local python=()
    read -r -a python < <(sed -n '1s/^#! *//p' "$(command -v docker-compose)")  # docker-compose's interpreter
    "${python[@]}" -c 'import docker' 2>/dev/null || python=("$PYTHON")
    "${python[@]}" -c 'import docker' 2>/dev/null \
        || fail "no docker-py (Debian's python3-docker) to measure the build context with"
    "${python[@]}" -c "$CONTEXT_SIZE" . deploy/Dockerfile "$CONTEXT_LIMIT_MB" \
        || fail "the build context is over $CONTEXT_LIMIT_MB MB: what is it sending (.dockerignore)?"
}

# -- 4. image -------------------------------------------------------------------------
build_image() {
    local log
    log=$(mktemp /tmp/asyncps-build.XXXXXX.log)
    TEMPS+=("$log")
    if ! docker-compose build >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        fail "docker-compose build (above)"
    fi
    echo "$(grep -c '^Step ' "$log") build steps, $(grep -c 'Using cache' "$log") from the cache"
    echo "image asyncps:latest: $(image_size asyncps:latest)"
}
image_size() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1 / 1e6}'; }

# -- 5. cluster, 6. crash, 7. finish ----------------------------------------------------
CLUSTER_UP=0 CLUSTER_T0=0 NEXT_REPORT=30 EVALUATOR=""
WAITER_PID="" WAIT_LOG="" REACHED="" KILLED_AT="" EVALUATOR_WAIT="" EVALUATOR_EXIT=""
states() {  # one line per container: SERVICE STATUS EXITCODE RESTARTS
    local ids
    ids=$(docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")
    [[ -n $ids ]] || return 0
    # shellcheck disable=SC2086
    docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} {{.State.ExitCode}} {{.RestartCount}}' $ids | sort
}
container_of() {  # container_of SERVICE: its container's id
    docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" \
        --filter "label=com.docker.compose.service=$1"
}

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
            NEXT_REPORT=$((SECONDS - CLUSTER_T0 + 30))
        fi
        sleep 0.5
    done
}

# Run inside the victim's container (its grpc and protos; no torch, so it
# starts in a moment): wait, on the shard's own versioned pull (no polling),
# until it has applied KILL_AT updates: every worker is training by then,
# and the shard has checkpoints to resume from. Then SIGKILL to the shard's
# asyncps process, as a crash (or the OOM killer) would: tini exits 137, and
# the restart policy applies. Not `docker kill`: Docker counts that as a
# manual stop, to which restart policies do not apply (the container stays
# exited; tried on Engine 20.10). The kill follows the pull at once, from
# here: the whole run takes seconds of training, and any round trip (a
# poll, docker inspect) lets the shard run on by hundreds of updates. A fresh
# container must have started from nothing: a checkpoint there would be an
# earlier run's. Prints the version, the time of the kill and the pid, and
# is killed with the container.
WAIT_AND_KILL='import os, signal, sys, time, grpc
from pathlib import Path
from asyncps.protos import ps_pb2, ps_pb2_grpc
address, at, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
token = os.environ.get("ASYNCPS_TOKEN")
metadata = [("authorization", f"Bearer {token}")] if token else None
with grpc.insecure_channel(address) as channel:
    stub = ps_pb2_grpc.ParameterServerStub(channel)
    try:
        status = stub.Status(ps_pb2.StatusRequest(), metadata=metadata, timeout=seconds, wait_for_ready=True)
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
# The shard: the child of the container'"'"'s init (tini, init: true) running `asyncps serve`.
serve = []
for process in filter(lambda p: p.name.isdigit(), Path("/proc").iterdir()):
    try:
        if (process / "stat").read_text().rsplit(")", 1)[1].split()[1] == "1" \
                and b"asyncps\0serve\0" in (process / "cmdline").read_bytes():
            serve.append(int(process.name))
    except OSError:  # a process that ended meanwhile (a health check)
        continue
if len(serve) != 1:
    sys.exit(f"expected one asyncps serve process under the container'"'"'s init, found {serve}")
# Said first: the kill ends the container, and this process with it.
print(status.version, time.time(), serve[0], sep="\n", flush=True)
os.kill(serve[0], signal.SIGKILL)'

# The job waits for the victim's container first: `up -d` starts the shards,
# waits for them to be healthy (3 s at least), and only then starts the
# workers, so the wait is in place long before any training.
start_cluster() {
    docker-compose down --remove-orphans >/dev/null 2>&1 || true  # an earlier run's, if any
    rm -rf "runs/$RUN_NAME"
    CLUSTER_UP=1
    CLUSTER_T0=$SECONDS NEXT_REPORT=30
    WAIT_LOG=$(mktemp /tmp/asyncps-wait.XXXXXX.log)
    TEMPS+=("$WAIT_LOG")
    (
        cid=""
        until [[ -n $cid ]] && [[ $(docker inspect -f '{{.State.Running}}' "$cid") == true ]]; do
            ((SECONDS - CLUSTER_T0 < 120)) || { echo "no running $VICTIM container within 120 s"; exit 1; }
            sleep 0.2
            cid=$(container_of "$VICTIM")
        done
        exec docker exec "$cid" python -c "$WAIT_AND_KILL" "127.0.0.1:50051" "$KILL_AT" "$TIMEOUT"
    ) >"$WAIT_LOG" 2>&1 &
    WAITER_PID=$!
    docker-compose up -d
    watch_cluster "shard $KILL_SHARD did not reach version $KILL_AT" killed
}
killed() {  # the background job above has seen KILL_AT and sent SIGKILL
    kill -0 "$WAITER_PID" 2>/dev/null && return 1
    local pid
    wait "$WAITER_PID" || true  # killed with the container: its lines say whether it did its job
    WAITER_PID=""
    # The job's three lines (anything grpc logged comes before, the exec's end after).
    { read -r REACHED && read -r KILLED_AT && read -r pid; } \
        < <(grep -E -A2 '^[0-9]+$' "$WAIT_LOG" | tail -n 3) || true
    [[ $REACHED =~ ^[0-9]+$ && $KILLED_AT =~ ^[0-9.]+$ && $pid =~ ^[0-9]+$ ]] \
        || fail "waiting for shard $KILL_SHARD to reach version $KILL_AT: $(cat "$WAIT_LOG")"
    echo "shard $KILL_SHARD at version $REACHED $((SECONDS - CLUSTER_T0)) s after the cluster's start:" \
         "SIGKILL to its asyncps serve (pid $pid in its container)"
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
    docker exec "$1" python -m asyncps.lab.backends.health 127.0.0.1:50051 >/dev/null 2>&1
}

# The README's wait, in the background while the cluster is watched.
finish_run() {
    EVALUATOR_WAIT=$(mktemp /tmp/asyncps-evaluator.XXXXXX)
    TEMPS+=("$EVALUATOR_WAIT")
    docker wait "$(docker-compose ps -q evaluator)" >"$EVALUATOR_WAIT" 2>&1 &
    EVALUATOR_EXIT=$!
    watch_cluster "the evaluator did not finish" evaluator_exited
    echo "evaluator exited with code $EVALUATOR after $((SECONDS - CLUSTER_T0)) s"
    [[ $EVALUATOR == 0 ]] || fail "evaluator exited with code $EVALUATOR"
    # Each worker exits once it has told every shard it is done.
    for _ in $(seq 60); do
        awk '$1 ~ /^worker/ && $2 != "exited" {found = 1} END {exit !found}' <<<"$(states)" || break
        sleep 0.5
    done
    awk '$1 ~ /^worker/ && ($2 != "exited" || $3 != 0) {print; bad = 1} END {exit bad}' <<<"$(states)" \
        || fail "workers did not all exit 0"
    show_progress
}
evaluator_exited() {
    kill -0 "$EVALUATOR_EXIT" 2>/dev/null && return 1
    wait "$EVALUATOR_EXIT" || fail "docker wait on the evaluator: $(cat "$EVALUATOR_WAIT")"
    EVALUATOR=$(tail -n 1 "$EVALUATOR_WAIT")
}

# The evaluator's log, as the README shows it: a line per evaluation (its
# progress, no terminal's bar) and the final accuracy.
show_progress() {
    local log evals
    log=$(docker-compose logs evaluator)
    evals=$(grep -c 'evaluator: .* updates: .*test_accuracy' <<<"$log" || true)
    grep -E 'updates: |final: ' <<<"$log" | sed -n '1p;$p' | sed 's/^/  /'
    ((evals >= 3)) || fail "docker-compose logs evaluator shows $evals lines of progress (3 or more wanted): $log"
    grep -q 'final: .*test_accuracy' <<<"$log" || fail "docker-compose logs evaluator shows no final accuracy: $log"
    echo "docker-compose logs evaluator: $evals lines of progress and the final accuracy"
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
# What stays for the next run, and how large: the images (in the test's
# engine's data root) and the wheelhouse. Dangling images (an earlier build
# of asyncps:latest or asyncps-deps) go.
report_kept() {
    local reclaimed root
    root=$(docker info -f '{{.DockerRootDir}}')
    if [[ $root != "$DATA_ROOT" ]]; then  # another engine on the socket: its images are not the test's
        echo "the engine on $SOCK keeps its images in $root, not $DATA_ROOT: they are left as they are"
        return 0
    fi
    reclaimed=$(docker image prune -f 2>/dev/null | awk '/reclaimed/ {print $NF}')
    [[ -z $reclaimed || $reclaimed == 0B ]] || echo "removed dangling images: $reclaimed"
    echo "--- kept for the next run (it reuses them; rm -rf $DATA_ROOT $PWD/deploy/.wheelhouse removes them)"
    docker images --format '  {{.Repository}}:{{.Tag}} {{.Size}}' | grep -v '<none>' || true
    echo "  images on disk (shared layers once): $(docker system df --format '{{if eq .Type "Images"}}{{.Size}}{{end}}' | tr -d '\n')," \
         "$DATA_ROOT $(du -sh "$DATA_ROOT" 2>/dev/null | cut -f1)"
    echo "  deploy/.wheelhouse $(du -sh deploy/.wheelhouse 2>/dev/null | cut -f1)," \
         "and the run's directory runs/$RUN_NAME $(du -sh "runs/$RUN_NAME" 2>/dev/null | cut -f1)"
    local dangling
    dangling=$(docker images -q --filter dangling=true | wc -l)
    ((dangling == 0)) || { echo "compose-test: $dangling dangling images left behind" >&2; return 1; }
}

finish() {
    local code=$?
    set +e
    [[ -n $WAITER_PID ]] && kill "$WAITER_PID" 2>/dev/null
    [[ -n $EVALUATOR_EXIT ]] && kill "$EVALUATOR_EXIT" 2>/dev/null
    if ((CLUSTER_UP)); then
        if ((code != 0)); then
            echo "--- containers (service, status, exit code, restarts)"
            states
            echo "--- logs of every service"
            docker-compose logs --no-color --timestamps
        fi
        docker-compose down >/dev/null 2>&1 || { echo "docker-compose down failed" >&2; code=1; }
    fi
    if engine_answers; then
        report_kept || code=1
    fi
    stop_engine
    check_host_network "after the test" || code=1
    # Ours only: the very link made at the start.
    ((MADE_DOCKER0)) && [[ $(cat /sys/class/net/docker0/ifindex 2>/dev/null) == "$DOCKER0_INDEX" ]] && ip link del docker0
    ((${#TEMPS[@]})) && rm -rf "${TEMPS[@]}"
    print_timings
    # The closing line, in the plain form CI reads as a test count.
    if ((code == 0)); then echo "compose-test: 1 passed, 0 failed"; else echo "compose-test: 0 passed, 1 failed"; fi
    exit "$code"
}
trap finish EXIT
trap 'exit 130' INT TERM

phase engine start_engine
phase deps make compose-deps
phase context measure_context
phase image build_image
phase cluster start_cluster
phase crash crash_shard
phase finish finish_run
phase check check_run
