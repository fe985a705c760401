#!/usr/bin/env bash
# Docker end-to-end test of docker/compose.yml: builds gossipdir:local from a static binary
# built here (docker/Dockerfile.local, FROM scratch), brings up five nodes on two networks
# joined by a relay, checks convergence, record expiry after `docker kill`, withdrawal after
# `docker stop`, healing after disconnecting and reconnecting a network; tears everything down.
# Exit 0: all passed; 1: a check failed; 77: Docker not available (skipped).
#
#   sudo docker/test.sh            # GD_STATIC_BIN=path to use a given static binary
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMPOSE_FILE="$ROOT/docker/compose.yml"
WORK="${GD_DOCKER_WORK:-/tmp/gd-docker}"
TTL_SECS=10
CAP=docker-test
NODES=(relay n1 n2 n3 n4)

log() { printf '[%s] %s\n' "$(date +%T.%3N)" "$*"; }
now_ms() { date +%s%3N; }

if ! docker info >/dev/null 2>&1; then
    log "SKIP: docker info does not answer"
    exit 77
fi
if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null; then
    COMPOSE=(docker-compose)
else
    log "SKIP: neither 'docker compose' nor docker-compose"
    exit 77
fi
compose() { "${COMPOSE[@]}" -p gd-dk -f "$COMPOSE_FILE" "$@"; }

teardown() {
    compose down -v --remove-orphans >/dev/null 2>&1
    docker rm -f "${NODES[@]/#/gd-dk-}" >/dev/null 2>&1
    docker network rm gd-dk-a gd-dk-b >/dev/null 2>&1
    return 0
}
trap 'teardown' EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ---- image --------------------------------------------------------------------------------
BIN="${GD_STATIC_BIN:-$ROOT/target/x86_64-unknown-linux-gnu/release/gossipdir}"
if [ ! -x "$BIN" ]; then
    log "building the static binary"
    (cd "$ROOT" && RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked \
        --target x86_64-unknown-linux-gnu --bin gossipdir) || { log "FAIL: static build"; exit 1; }
fi
file "$BIN" 2>/dev/null | grep -Eq 'statically linked|static-pie linked' || ldd "$BIN" 2>&1 | grep -Eq 'not a dynamic|statically linked' ||
    { log "FAIL: $BIN is not statically linked"; exit 1; }
rm -rf "$WORK"
mkdir -p "$WORK/ctx/data" "$WORK/keys"
strip -o "$WORK/ctx/gossipdir" "$BIN" 2>/dev/null || cp "$BIN" "$WORK/ctx/gossipdir"
t0=$(now_ms)
docker build -q -f "$ROOT/docker/Dockerfile.local" -t gossipdir:local "$WORK/ctx" >/dev/null ||
    { log "FAIL: docker build"; exit 1; }
log "image gossipdir:local built in $(($(now_ms) - t0)) ms ($(docker image inspect -f '{{.Size}}' gossipdir:local) bytes)"

"$BIN" keygen --out "$WORK/keys/relay.key" >"$WORK/keys/relay.id"
chown -R 10001:10001 "$WORK/keys"
export GD_KEYS="$WORK/keys" GD_RELAY_ID
GD_RELAY_ID="$(cat "$WORK/keys/relay.id")"

teardown
t0=$(now_ms)
compose up -d >"$WORK/compose-up.log" 2>&1 || { cat "$WORK/compose-up.log"; log "FAIL: compose up"; exit 1; }

gd() { local n="$1"; shift; docker exec "gd-dk-$n" /gossipdir "$@"; }
names_at() { gd "$1" query --capability "$CAP" --json 2>/dev/null | jq -r '[.[].name] | sort | join(",")'; }
join_sorted() { tr ' ' '\n' | grep -v '^$' | sort | paste -sd, -; }
wait_names() { # NODES EXPECTED TIMEOUT_MS -> WAITED_MS
    local start deadline n ok
    start=$(now_ms)
    deadline=$((start + $3))
    while :; do
        ok=1
        for n in $1; do [ "$(names_at "$n")" = "$2" ] || { ok=0; break; }; done
        WAITED_MS=$(($(now_ms) - start))
        [ $ok = 1 ] && return 0
        [ "$(now_ms)" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}
FAILED=0
result() { if [ "$1" = 0 ]; then log "PASS $2"; else log "FAIL $2"; FAILED=1; fi; }
show() { for n in $1; do log "    $n holds: $(names_at "$n")"; done; }

for n in "${NODES[@]}"; do
    deadline=$(($(now_ms) + 20000))
    until gd "$n" status --json >/dev/null 2>&1; do
        [ "$(now_ms)" -lt "$deadline" ] || { docker logs "gd-dk-$n" 2>&1 | tail -20; log "FAIL: $n API"; exit 1; }
        sleep 0.2
    done
done
log "5 containers up, APIs answering, $(($(now_ms) - t0)) ms after compose up"

# 1. convergence
live="${NODES[*]}"
for n in $live; do gd "$n" announce --name "spec-$n" --capability "$CAP" >/dev/null || result 1 "announce on $n"; done
expected=$(for n in $live; do echo "spec-$n"; done | join_sorted)
if wait_names "$live" "$expected" 30000; then
    rounds=$(for n in $live; do printf '%s:%s ' "$n" "$(gd "$n" status --json | jq .round)"; done)
    result 0 "1 convergence: all 5 hold all 5 specialists after $WAITED_MS ms (status.round now: $rounds)"
else
    show "$live"
    result 1 "1 convergence within 30 s"
fi
relayed=$(for n in n1 n2 n3 n4; do printf '%s:%s ' "$n" "$(gd "$n" status --json | jq -c .connections)"; done)
log "    connections: $relayed"

# 2. healthcheck
deadline=$(($(now_ms) + 20000))
until [ "$(docker inspect -f '{{.State.Health.Status}}' gd-dk-n1)" = healthy ]; do
    [ "$(now_ms)" -lt "$deadline" ] || break
    sleep 0.5
done
h=$(docker inspect -f '{{.State.Health.Status}}' gd-dk-n1)
[ "$h" = healthy ]
result $? "2 HEALTHCHECK: gd-dk-n1 is $h"

# 3. a network cut and healed: disconnect the relay from network b, announce on both sides
docker network disconnect gd-dk-b gd-dk-relay
gd n1 announce --name part-n1 --capability "$CAP" >/dev/null
gd n3 announce --name part-n3 --capability "$CAP" >/dev/null
sleep 3
leak=0
case ",$(names_at n4)," in *,part-n1,*) leak=1 ;; esac
case ",$(names_at n2)," in *,part-n3,*) leak=1 ;; esac
own=0
case ",$(names_at n4)," in *,part-n3,*) ;; *) own=1 ;; esac
case ",$(names_at n2)," in *,part-n1,*) ;; *) own=1 ;; esac
docker network connect --ip 10.213.2.2 gd-dk-b gd-dk-relay
healed=$(now_ms)
ok=1
while [ $(($(now_ms) - healed)) -lt 40000 ]; do
    ok=0
    for n in $live; do
        case ",$(names_at "$n")," in *,part-n1,*part-n3,* | *,part-n3,*part-n1,*) ;; *) ok=1; break ;; esac
    done
    [ $ok = 0 ] && break
    sleep 0.2
done
waited=$(($(now_ms) - healed))
[ $leak = 0 ] && [ $own = 0 ] && [ $ok = 0 ]
result $? "3 partition: leak=$leak, each side saw its own=$((1 - own)), part-n1+part-n3 everywhere $waited ms after reconnecting"
[ $ok = 0 ] || show "$live"
gd n1 withdraw --name part-n1 >/dev/null
gd n3 withdraw --name part-n3 >/dev/null
wait_names "$live" "$expected" 30000 || { log "    (full directory not back within 30 s)"; show "$live"; }

# 4. docker kill (SIGKILL): records expire within TTL + a few rounds
docker kill gd-dk-n4 >/dev/null
live="relay n1 n2 n3"
expected=$(for n in $live; do echo "spec-$n"; done | join_sorted)
bound=$((TTL_SECS * 1000 + 3000))
if wait_names "$live" "$expected" $((bound + 10000)) && [ "$WAITED_MS" -le $bound ]; then
    result 0 "4 docker kill n4: its record gone everywhere after $WAITED_MS ms (bound $bound ms)"
else
    show "$live"
    result 1 "4 docker kill n4: gone after ${WAITED_MS} ms (bound $bound ms)"
fi

# 5. docker stop (SIGTERM): withdrawn within a few rounds
docker stop -t 20 gd-dk-n2 >/dev/null &
live="relay n1 n3"
expected=$(for n in $live; do echo "spec-$n"; done | join_sorted)
if wait_names "$live" "$expected" 15000 && [ "$WAITED_MS" -le 5000 ]; then
    result 0 "5 docker stop n2: withdrawn everywhere after $WAITED_MS ms"
else
    show "$live"
    result 1 "5 docker stop n2: gone after ${WAITED_MS} ms (bound 5000 ms)"
fi
wait
log "exit code of gd-dk-n2 after docker stop: $(docker inspect -f '{{.State.ExitCode}}' gd-dk-n2)"

for n in "${NODES[@]}"; do docker logs "gd-dk-$n" >"$WORK/$n.log" 2>&1; done
teardown
left=$(docker ps -a --filter name=gd-dk- -q | wc -l)
log "torn down (containers left: $left); logs in $WORK"
[ "$left" = 0 ] || FAILED=1
exit $FAILED
