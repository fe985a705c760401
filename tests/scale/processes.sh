#!/usr/bin/env bash
# Scale on real processes (issue 6): N separate `gossipdir node` daemons on 127.0.0.1.
#
# Starts N nodes (TCP on 127.0.0.1 only, mDNS off, each bootstrapped to node 0), waits until
# every node's API reports N node records, then
#   0. with --specialists S: each node announces S specialists, and the script waits until every
#      node lists all N × S of them;
#   1. an idle window: nothing new announced (records are only refreshed); CPU (% of one core, from /proc/<pid>/stat utime+stime),
#      resident memory (VmRSS) and sync-protocol payload bytes (GET /v1/status, gossip_bytes) per
#      node per second;
#   2. trials: each announces a new specialist on a random node through its HTTP API and
#      measures rounds (ticks of the announcing node) and wall time until every node's API
#      returns it, and the payload bytes every node received meanwhile;
# and prints a table (or JSON with --json). Every process it starts is killed and its temporary
# directory removed on exit, Ctrl-C included.
#
#   tests/scale/processes.sh [--nodes 30] [--trials 10] [--gap 1] [--idle 30] [--interval 1s]
#                            [--port-base 42100] [--api-base 52100] [--bin PATH] [--json]
#                            [--ttl 60s] [--specialists 0] [--specialist-ttl 10m]
#                            [--keep-logs DIR]
#
# --gap: seconds between trials; --ttl: the nodes' node-record lifetime (refreshed at a third of
# it); --specialist-ttl: their specialists' lifetime (refreshed at a third of it; the node's
# default is 10m, kept alive by the node record; 60s re-signs them as often as the node record).
#
# Needs curl and jq. Bounded: joining may take at most --join-timeout seconds (default 120), a
# trial at most 60 rounds.
set -euo pipefail

NODES=30
TRIALS=10
GAP=1
IDLE_SECS=30
INTERVAL=1s
PORT_BASE=42100
API_BASE=52100
BIN=""
JSON=0
JOIN_TIMEOUT=120
KEEP_LOGS=""
TTL=""
SPECIALISTS=0
SPECIALIST_TTL=""

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --nodes) NODES="$2"; shift 2 ;;
        --trials) TRIALS="$2"; shift 2 ;;
        --gap) GAP="$2"; shift 2 ;;
        --idle) IDLE_SECS="$2"; shift 2 ;;
        --interval) INTERVAL="$2"; shift 2 ;;
        --ttl) TTL="$2"; shift 2 ;;
        --specialists) SPECIALISTS="$2"; shift 2 ;;
        --specialist-ttl) SPECIALIST_TTL="$2"; shift 2 ;;
        --port-base) PORT_BASE="$2"; shift 2 ;;
        --api-base) API_BASE="$2"; shift 2 ;;
        --bin) BIN="$2"; shift 2 ;;
        --json) JSON=1; shift ;;
        --join-timeout) JOIN_TIMEOUT="$2"; shift 2 ;;
        --keep-logs) KEEP_LOGS="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

for tool in curl jq; do
    command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 2; }
done
if [[ -z "$BIN" ]]; then
    ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/gossipdir"
fi
[[ -x "$BIN" ]] || { echo "no gossipdir binary at $BIN (cargo build --release, or --bin)" >&2; exit 2; }
(( NODES >= 2 && NODES <= 500 )) || { echo "--nodes must be 2..500" >&2; exit 2; }
(( SPECIALISTS >= 0 && SPECIALISTS <= 60 )) || { echo "--specialists must be 0..60" >&2; exit 2; }

HZ=$(getconf CLK_TCK)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gossipdir-scale.XXXXXX")
PIDS=()

log() { echo "[$(date +%T)] $*" >&2; }

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [[ ${#PIDS[@]} -gt 0 ]]; then
        kill -TERM "${PIDS[@]}" 2>/dev/null || true
        # Nodes withdraw their records for up to 3 rounds on SIGTERM; then they are killed.
        local deadline=$((SECONDS + 10))
        for pid in "${PIDS[@]}"; do
            while kill -0 "$pid" 2>/dev/null && (( SECONDS < deadline )); do sleep 0.1; done
        done
        kill -KILL "${PIDS[@]}" 2>/dev/null || true
        wait 2>/dev/null || true
    fi
    if [[ -n "$KEEP_LOGS" ]]; then
        mkdir -p "$KEEP_LOGS"
        cp "$WORK"/node*.log "$KEEP_LOGS"/ 2>/dev/null || true
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

api() { echo "http://127.0.0.1:$((API_BASE + $1))"; }

port_free() {
    # A connect that succeeds means something listens there already.
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

for ((i = 0; i < NODES; i++)); do
    for p in $((PORT_BASE + i)) $((API_BASE + i)); do
        port_free "$p" || { echo "port $p on 127.0.0.1 is in use (--port-base/--api-base)" >&2; exit 2; }
    done
done

# ---- start --------------------------------------------------------------------------------

"$BIN" keygen --out "$WORK/node0.key" >"$WORK/node0.id"
BOOT_ID=$(grep -o '12D3Koo[1-9A-HJ-NP-Za-km-z]*' "$WORK/node0.id" | head -n 1)
[[ -n "$BOOT_ID" ]] || { echo "cannot read node 0's peer id from keygen" >&2; exit 1; }
BOOT="/ip4/127.0.0.1/tcp/$PORT_BASE/p2p/$BOOT_ID"

start_node() {
    local i=$1
    local args=(node --listen "/ip4/127.0.0.1/tcp/$((PORT_BASE + i))"
        --api "127.0.0.1:$((API_BASE + i))" --data-dir "$WORK/node$i"
        --key "$WORK/node$i.key" --no-mdns --interval "$INTERVAL")
    [[ -n "$TTL" ]] && args+=(--ttl "$TTL")
    [[ -n "$SPECIALIST_TTL" ]] && args+=(--specialist-ttl "$SPECIALIST_TTL")
    (( i > 0 )) && args+=(--bootstrap "$BOOT")
    RUST_LOG="${RUST_LOG:-warn}" "$BIN" "${args[@]}" >"$WORK/node$i.log" 2>&1 &
    PIDS+=("$!")
}

T0=$SECONDS
log "starting $NODES nodes (bin $BIN, interval $INTERVAL, work dir $WORK)"
for ((i = 0; i < NODES; i++)); do start_node "$i"; done

# One curl for every node: each node's status, one JSON object per line (all must answer).
all_status() {
    local urls=() i
    for ((i = 0; i < NODES; i++)); do urls+=("$(api "$i")/v1/status"); done
    curl -s --max-time 10 "${urls[@]}" -w '\n' 2>/dev/null || true
}

status_field() { all_status | jq -r "$1" 2>/dev/null || true; }

# Waits (at most --join-timeout) until every node's status FIELD is at least N; WHAT names it.
wait_every_node() {
    local field=$1 n=$2 what=$3 count i
    local deadline=$((SECONDS + JOIN_TIMEOUT))
    while :; do
        for ((i = 0; i < NODES; i++)); do
            kill -0 "${PIDS[$i]}" 2>/dev/null || { echo "node $i exited:" >&2; tail -n 20 "$WORK/node$i.log" >&2; exit 1; }
        done
        count=$(status_field "$field" | awk -v n="$n" '$1 >= n { c++ } END { print c + 0 }')
        (( count == NODES )) && return
        if (( SECONDS > deadline )); then
            echo "only $count of $NODES nodes held $what after ${JOIN_TIMEOUT}s" >&2
            exit 1
        fi
        sleep 0.5
    done
}

# Announces the specialist JSON on node I through its API.
announce() {
    local i=$1 json=$2 code
    code=$(curl -s -o "$WORK/announce.json" -w '%{http_code}' --max-time 5 \
        -H 'Content-Type: application/json' -d "$json" "$(api "$i")/v1/specialists")
    [[ "$code" == 201 ]] || { echo "announce on node $i failed ($code): $(cat "$WORK/announce.json")" >&2; exit 1; }
}

wait_every_node .nodes "$NODES" "every node record"
JOIN_SECS=$((SECONDS - T0))
log "all $NODES nodes hold $NODES node records after ${JOIN_SECS}s"

# ---- specialists ----------------------------------------------------------------------------

if (( SPECIALISTS > 0 )); then
    log "announcing $SPECIALISTS specialists on each node"
    for ((i = 0; i < NODES; i++)); do
        for ((s = 0; s < SPECIALISTS; s++)); do
            announce "$i" "{\"name\":\"resident-$s\",\"capabilities\":[\"resident\",\"resident-$i-$s\"],\"endpoint\":\"https://n$i.example/s$s\"}"
        done
    done
    want=$((NODES * SPECIALISTS))
    wait_every_node .specialists "$want" "all $want specialists listed"
    log "every node lists all $want specialists"
fi

# ---- measurement helpers ------------------------------------------------------------------

now_ms() { date +%s%3N; }

# "utime+stime" ticks of every node, one per line.
cpu_ticks() {
    local pid
    for pid in "${PIDS[@]}"; do
        # Fields after the ")" of the command name: utime is the 12th, stime the 13th.
        awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat"
    done
}

rss_kib() {
    local pid
    for pid in "${PIDS[@]}"; do
        awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status"
    done
}

# "received sent" payload bytes of every node, one line per node.
gossip_bytes() { all_status | jq -r '"\(.gossip_bytes.received) \(.gossip_bytes.sent)"'; }

# Summary "avg max" of a column of numbers.
avg_max() { awk '{ s += $1; if (NR == 1 || $1 > m) m = $1 } END { if (NR) printf "%.3f %.3f\n", s / NR, m; else print "0 0" }'; }

# Per-node CPU % of one core between two tick lists over ms milliseconds.
cpu_pct() {
    local before=$1 after=$2 ms=$3
    paste <(echo "$before") <(echo "$after") |
        awk -v hz="$HZ" -v ms="$ms" '{ print ($2 - $1) / hz * 100000 / ms }'
}

# Per-node bytes/s between two "received sent" lists: column 1 received, 2 sent.
bytes_rate() {
    local before=$1 after=$2 ms=$3
    paste -d' ' <(echo "$before") <(echo "$after") |
        awk -v ms="$ms" '{ printf "%.1f %.1f\n", ($3 - $1) * 1000 / ms, ($4 - $2) * 1000 / ms }'
}

# ---- idle window --------------------------------------------------------------------------

# Let the joining burst settle for a few rounds before measuring.
sleep 5
log "idle window: ${IDLE_SECS}s, nothing announced"
cpu0=$(cpu_ticks); bytes0=$(gossip_bytes); t0=$(now_ms)
sleep "$IDLE_SECS"
cpu1=$(cpu_ticks); bytes1=$(gossip_bytes); t1=$(now_ms)
idle_ms=$((t1 - t0))
idle_cpu=$(cpu_pct "$cpu0" "$cpu1" "$idle_ms")
idle_rates=$(bytes_rate "$bytes0" "$bytes1" "$idle_ms")
read -r idle_cpu_avg idle_cpu_max <<<"$(avg_max <<<"$idle_cpu")"
read -r idle_in_avg idle_in_max <<<"$(awk '{ print $1 }' <<<"$idle_rates" | avg_max)"
read -r idle_out_avg idle_out_max <<<"$(awk '{ print $2 }' <<<"$idle_rates" | avg_max)"
idle_rss=$(rss_kib)
read -r idle_rss_avg idle_rss_max <<<"$(avg_max <<<"$idle_rss")"
idle_records=$(status_field ".records" | avg_max | awk '{ print $1 }')

# ---- trials -------------------------------------------------------------------------------

# Prints, for each node, the size of its answer to the query (an empty list is "[]").
holders() {
    local cap=$1 urls=() i
    for ((i = 0; i < NODES; i++)); do urls+=("$(api "$i")/v1/records?capability=$cap"); done
    curl -s --max-time 5 -o /dev/null -w '%{size_download}\n' "${urls[@]}" 2>/dev/null |
        awk '$1 > 2 { c++ } END { print c + 0 }'
}

round_of() { curl -s --max-time 5 "$(api "$1")/v1/status" | jq -r '.round'; }

TRIAL_ROWS=()
cpu_t0=$(cpu_ticks); tt0=$(now_ms)
max_rounds=60
for ((t = 0; t < TRIALS; t++)); do
    origin=$((RANDOM % NODES))
    cap="scale-$$-$t-$RANDOM"
    b0=$(gossip_bytes)
    r0=$(round_of "$origin")
    s=$(now_ms)
    announce "$origin" "{\"name\":\"scale-$t\",\"capabilities\":[\"$cap\"],\"endpoint\":\"https://node$origin.invalid/\",\"ttl_secs\":600}"
    converged=false
    while :; do
        held=$(holders "$cap")
        e=$(now_ms)
        r1=$(round_of "$origin")
        if (( held == NODES )); then converged=true; break; fi
        (( r1 - r0 > max_rounds )) && break
        sleep 0.02
    done
    wall=$((e - s))
    rounds=$((r1 - r0))
    b1=$(gossip_bytes)
    per_node_in=$(paste -d' ' <(echo "$b0") <(echo "$b1") | awk '{ s += $3 - $1 } END { printf "%.0f", s / NR }')
    log "trial $t: origin $origin, $rounds round(s), $wall ms, $held/$NODES nodes, $per_node_in B received per node"
    TRIAL_ROWS+=("$t $origin $converged $rounds $wall $per_node_in")
    sleep "$GAP"
done
cpu_t1=$(cpu_ticks); tt1=$(now_ms)
trial_cpu=$(cpu_pct "$cpu_t0" "$cpu_t1" $((tt1 - tt0)))
read -r trial_cpu_avg trial_cpu_max <<<"$(avg_max <<<"$trial_cpu")"
trial_rss=$(rss_kib)
read -r trial_rss_avg trial_rss_max <<<"$(avg_max <<<"$trial_rss")"

bound=$(awk -v n="$NODES" 'BEGIN { b = log(n) / log(2); c = int(b); if (c < b) c++; print c }')
trial_lines=$(printf '%s\n' "${TRIAL_ROWS[@]}")
summary=$(awk -v bound="$bound" '
    { n++; if ($3 == "true") { ok++; r += $4; w += $5; if ($4 > rmax) rmax = $4; if ($5 > wmax) wmax = $5; if (!seen || $5 < wmin) wmin = $5; seen = 1; if ($4 <= bound) within++ } b += $6 }
    END { printf "%d %d %d %.2f %d %.1f %d %d %.0f\n", n, ok, within, (ok ? r / ok : 0), rmax, (ok ? w / ok : 0), wmax, wmin, b / n }' <<<"$trial_lines")
read -r n_trials n_ok n_within rounds_avg rounds_max wall_avg wall_max wall_min bytes_trial <<<"$summary"

if (( JSON )); then
    jq -n \
        --argjson nodes "$NODES" --arg interval "$INTERVAL" --argjson join_secs "$JOIN_SECS" \
        --argjson bound "$bound" --argjson idle_secs "$((idle_ms / 1000))" \
        --argjson idle_cpu_avg "$idle_cpu_avg" --argjson idle_cpu_max "$idle_cpu_max" \
        --argjson idle_in_avg "$idle_in_avg" --argjson idle_in_max "$idle_in_max" \
        --argjson idle_out_avg "$idle_out_avg" --argjson idle_out_max "$idle_out_max" \
        --argjson idle_rss_avg "$idle_rss_avg" --argjson idle_rss_max "$idle_rss_max" \
        --argjson idle_records "$idle_records" \
        --argjson trial_cpu_avg "$trial_cpu_avg" --argjson trial_cpu_max "$trial_cpu_max" \
        --argjson trial_rss_avg "$trial_rss_avg" --argjson trial_rss_max "$trial_rss_max" \
        --argjson within "$n_within" --argjson converged "$n_ok" --argjson trials "$n_trials" \
        --argjson rounds_avg "$rounds_avg" --argjson rounds_max "$rounds_max" \
        --argjson wall_avg "$wall_avg" --argjson wall_max "$wall_max" --argjson wall_min "$wall_min" \
        --argjson bytes_trial "$bytes_trial" --arg rows "$trial_lines" '
        {
          nodes: $nodes, interval: $interval, join_secs: $join_secs, bound_rounds: $bound,
          idle: { secs: $idle_secs, records_per_node: $idle_records,
                  cpu_pct_of_core: { avg: $idle_cpu_avg, max: $idle_cpu_max },
                  payload_bytes_per_s_received: { avg: $idle_in_avg, max: $idle_in_max },
                  payload_bytes_per_s_sent: { avg: $idle_out_avg, max: $idle_out_max },
                  rss_kib: { avg: $idle_rss_avg, max: $idle_rss_max } },
          trials: { count: $trials, converged: $converged, within_bound: $within,
                    rounds: { avg: $rounds_avg, max: $rounds_max },
                    wall_ms: { avg: $wall_avg, max: $wall_max, min: $wall_min },
                    payload_bytes_received_per_node_per_trial: $bytes_trial,
                    cpu_pct_of_core: { avg: $trial_cpu_avg, max: $trial_cpu_max },
                    rss_kib: { avg: $trial_rss_avg, max: $trial_rss_max },
                    each: ($rows | split("\n") | map(select(length > 0) | split(" ") |
                      { trial: (.[0] | tonumber), origin: (.[1] | tonumber),
                        converged: (.[2] == "true"), rounds: (.[3] | tonumber),
                        wall_ms: (.[4] | tonumber), bytes_received_per_node: (.[5] | tonumber) })) }
        }'
else
    echo
    echo "$NODES gossipdir node processes on 127.0.0.1, interval $INTERVAL, joined in ${JOIN_SECS}s"
    echo
    echo "| trial | origin | converged | rounds | wall ms | payload B received per node |"
    echo "|---|---|---|---|---|---|"
    awk '{ printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6 }' <<<"$trial_lines"
    echo
    echo "| measure | value |"
    echo "|---|---|"
    echo "| trials converged / within ⌈log2 N⌉ = $bound rounds | $n_ok / $n_within of $n_trials |"
    echo "| rounds avg / max | $rounds_avg / $rounds_max |"
    echo "| wall ms min / avg / max | $wall_min / $wall_avg / $wall_max |"
    echo "| payload B received per node per trial (avg) | $bytes_trial |"
    echo "| CPU % of a core per node during trials, avg / max | $trial_cpu_avg / $trial_cpu_max |"
    echo "| RSS MiB per node after trials, avg / max | $(awk -v a="$trial_rss_avg" -v m="$trial_rss_max" 'BEGIN { printf "%.1f / %.1f", a / 1024, m / 1024 }') |"
    echo "| idle (${idle_ms} ms): CPU % of a core per node, avg / max | $idle_cpu_avg / $idle_cpu_max |"
    echo "| idle: payload B/s received per node, avg / max | $idle_in_avg / $idle_in_max |"
    echo "| idle: payload B/s sent per node, avg / max | $idle_out_avg / $idle_out_max |"
    echo "| idle: RSS MiB per node, avg / max | $(awk -v a="$idle_rss_avg" -v m="$idle_rss_max" 'BEGIN { printf "%.1f / %.1f", a / 1024, m / 1024 }') |"
    echo "| idle: live records per node | $idle_records |"
fi
