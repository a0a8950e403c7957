#!/usr/bin/env bash
# End-to-end test of deploy/docker-compose.yml: builds the scratch image, starts the secure
# 3-master, 2-agent cluster, submits tasks through the `cli` service, kills the leader's
# container, submits more, and checks that every task, from before and after the kill,
# succeeded; then restarts the killed master and checks it rejoins. Cleans up after itself
# (containers, volumes, network) whatever happens, under a compose project name of its own.
#
#   deploy/compose-test.sh                   # builds target/debug/taurus and taurus:local
#   deploy/compose-test.sh --binary PATH     # image from an existing binary
#   deploy/compose-test.sh --no-build        # use the taurus:local image as it is
#
# Needs Docker and `docker compose` or `docker-compose`; nothing is pulled. Exit status 0 when
# everything passed, 1 otherwise (the last lines say what failed, with the services' logs).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
compose_file="$here/docker-compose.yml"
build=1
build_args=()
# Tasks of each kind submitted one by one in each phase, and no-op tasks per `bench e2e` run.
per_kind=3
bench_tasks=300
# Bounds of every wait (seconds).
up_timeout=240
wait_timeout=120

while (($#)); do
  case "$1" in
    --binary) build_args+=(--binary "${2:?--binary needs a PATH}"); shift 2 ;;
    --release) build_args+=(--release); shift ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "compose-test: unknown option $1" >&2; exit 2 ;;
  esac
done

if docker compose version >/dev/null 2>&1; then
  compose_cmd=(docker compose)
elif command -v docker-compose >/dev/null; then
  compose_cmd=(docker-compose)
else
  echo "compose-test: neither 'docker compose' nor 'docker-compose' is installed" >&2
  exit 2
fi

project="taurus-ci-$$-$RANDOM"
# Publish the masters' ports on any free host port: runs never collide with each other or
# with a cluster the developer has running.
export TAURUS_PORT_1=0 TAURUS_PORT_2=0 TAURUS_PORT_3=0 TAURUS_HTTP_PORT_1=0 TAURUS_HTTP_PORT_2=0
export TAURUS_HTTP_PORT_3=0 TAURUS_AGENT_HTTP_PORT_1=0 TAURUS_AGENT_HTTP_PORT_2=0 TAURUS_IMAGE="${TAURUS_IMAGE:-taurus:local}"
started=$SECONDS
step_started=$SECONDS

dc() { "${compose_cmd[@]}" -p "$project" -f "$compose_file" "$@"; }
# The CLI as the admin, in a fresh container on the cluster's network.
# (docker-compose 1.x reports every container it creates on stderr: dropped.)
cli() { dc run --rm -T cli "$@" 2> >(grep -vE '^(Creating|Starting) .*(_run|\.\.\.)' >&2); }
log() { printf '[%3ds] %s\n' "$((SECONDS - started))" "$*"; }
step() { step_started=$SECONDS; log "$*"; }
step_time() { echo "$((SECONDS - step_started))s"; }

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if ((status != 0)); then
    echo "---- compose-test FAILED; state of the cluster:" >&2
    dc ps >&2 || true
    dc logs --no-color --tail 40 >&2 || true
  fi
  dc --profile tools down -v --remove-orphans --timeout 5 >/dev/null 2>&1 \
    || dc down -v --remove-orphans --timeout 5 >/dev/null 2>&1 || true
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "compose-test: FAIL: $*" >&2; exit 1; }

# Runs "$@" until it succeeds, at most $1 seconds; the last output goes into the failure.
retry_for() {
  local limit=$1 what=$2; shift 2
  local deadline=$((SECONDS + limit)) out
  while true; do
    if out=$("$@" 2>&1); then
      [[ -z "$out" ]] || printf '%s\n' "$out"
      return 0
    fi
    ((SECONDS < deadline)) || fail "$what: not within ${limit}s; last output: $out"
    sleep 1
  done
}

if ((build)); then
  step "building the image"
  "$here/docker/build-image.sh" ${build_args[@]+"${build_args[@]}"} | sed 's/^/  /'
  log "image built in $(step_time)"
fi
docker image inspect "$TAURUS_IMAGE" >/dev/null 2>&1 || fail "no image $TAURUS_IMAGE (run without --no-build)"

step "starting the cluster (compose project $project)"
timeout "$up_timeout" "${compose_cmd[@]}" -p "$project" -f "$compose_file" up -d 2>&1 | sed 's/^/  /' \
  || fail "docker compose up did not succeed within ${up_timeout}s"
for m in master-1 master-2 master-3; do
  id=$(dc ps -q "$m")
  [[ -n "$id" ]] || fail "$m has no container"
  deadline=$((SECONDS + up_timeout))
  until [[ "$(docker inspect --format '{{.State.Health.Status}}' "$id")" == healthy ]]; do
    ((SECONDS < deadline)) || fail "$m not healthy within ${up_timeout}s"
    sleep 1
  done
done
log "masters healthy after $(step_time)"

retry_for "$wait_timeout" "the bootstrap service writing the admin token" cli acl whoami | sed 's/^/  /'
agents_alive() {
  local out
  out=$(cli agent list) || return 1
  [[ $(grep -c ' alive ' <<<"$out") -ge 2 ]] || { echo "$out"; return 1; }
}
retry_for "$wait_timeout" "both agents registering" agents_alive >/dev/null
# The agents' Docker health checks (`taurus health --http` on their /healthz) pass too.
for a in agent-1 agent-2; do
  id=$(dc ps -q "$a")
  deadline=$((SECONDS + wait_timeout))
  until [[ "$(docker inspect --format '{{.State.Health.Status}}' "$id")" == healthy ]]; do
    ((SECONDS < deadline)) || fail "$a not healthy within ${wait_timeout}s"
    sleep 1
  done
done
log "admin token bootstrapped, 2 agents alive and healthy after $(step_time)"

# Tasks of one phase: no-op tasks (built into the agent) and real processes (`taurus
# --version`: the only program in the scratch image), with ids of our own to check later.
ids=()
submit_phase() {
  local phase=$1 i
  for ((i = 1; i <= per_kind; i++)); do
    cli task submit --id "ci-$phase-noop-$i" --label suite=compose-test -- taurus:noop >/dev/null
    cli task submit --id "ci-$phase-proc-$i" --label suite=compose-test --max-attempts 3 -- taurus --version >/dev/null
    ids+=("ci-$phase-noop-$i" "ci-$phase-proc-$i")
  done
}

step "phase 1: submitting $((2 * per_kind)) tasks one by one, then $bench_tasks through bench e2e"
submit_phase before
cli bench e2e --tasks "$bench_tasks" --concurrency 4 --batch 50 --timeout-total 2m | sed 's/^/  /'
log "phase 1 done in $(step_time)"

status=$(cli cluster status)
leader=$(sed -n 's/^leader: \([0-9][0-9]*\) .*/\1/p' <<<"$status")
[[ -n "$leader" ]] || fail "no leader in: $status"
victim=$(dc ps -q "master-$leader")
step "killing the leader, master-$leader (container ${victim:0:12})"
docker kill "$victim" >/dev/null

step "phase 2: submitting $((2 * per_kind)) more tasks, then $bench_tasks through bench e2e"
submit_phase after
cli bench e2e --tasks "$bench_tasks" --concurrency 4 --batch 50 --timeout-total 2m | sed 's/^/  /'
status=$(cli cluster status)
new_leader=$(sed -n 's/^leader: \([0-9][0-9]*\) .*/\1/p' <<<"$status")
[[ -n "$new_leader" && "$new_leader" != "$leader" ]] || fail "no new leader after killing master-$leader: $status"
log "phase 2 done in $(step_time); master-$new_leader leads now"

step "waiting for all ${#ids[@]} tasks to succeed"
all_succeeded() {
  local out n
  out=$(cli task list --all --label suite=compose-test --state succeeded) || return 1
  n=$(grep -oE 'ci-(before|after)-(noop|proc)-[0-9]+' <<<"$out" | sort -u | wc -l)
  ((n == ${#ids[@]})) || { echo "$n of ${#ids[@]} succeeded"; cli task list --all --label suite=compose-test; return 1; }
}
retry_for "$wait_timeout" "all tasks succeeding" all_succeeded >/dev/null
cli task wait "ci-before-proc-1" >/dev/null || fail "task wait ci-before-proc-1"
out=$(cli task logs --stdout-only "ci-after-proc-1")
version=$(grep -m1 '^taurus ' <<<"$out") || fail "ci-after-proc-1 printed no version: $out"
log "all tasks succeeded after $(step_time); a process task printed: $version"

step "restarting master-$leader: it must rejoin from its volume"
dc start "master-$leader" >/dev/null
deadline=$((SECONDS + up_timeout))
until [[ "$(docker inspect --format '{{.State.Health.Status}}' "$victim")" == healthy ]]; do
  ((SECONDS < deadline)) || fail "master-$leader not healthy again within ${up_timeout}s"
  sleep 1
done
rejoined() {
  local out
  out=$(cli --json cluster status) || return 1
  # Three members, every one reachable from the master that answered.
  [[ $(grep -c '"reachable": true' <<<"$out") -eq 3 ]] || { echo "$out"; return 1; }
}
retry_for "$wait_timeout" "master-$leader rejoining" rejoined | sed 's/^/  /'
log "master-$leader rejoined after $(step_time)"

echo
cli task list --label suite=compose-test --limit 20 | sed 's/^/  /'
echo
echo "compose-test: PASS in $((SECONDS - started))s: ${#ids[@]} tasks submitted one by one and $((2 * bench_tasks)) by bench e2e, half before and half after killing the leader (master-$leader -> master-$new_leader); all succeeded; master-$leader rejoined"
