#!/usr/bin/env bash
# gossipdir across NAT: an asymmetric-reachability testbed of network namespaces.
#
#   sudo tests/nat/testbed.sh up     [--nat cone|symmetric] [--loss 0.2] [--delay 200ms [--delay-dir both|out|in]]
#                                    [--netem "delay 30ms loss 2%"]
#   sudo tests/nat/testbed.sh check  [--only 1,2,3,5,6,7,8,4]
#   sudo tests/nat/testbed.sh down
#   sudo tests/nat/testbed.sh ci     # scenarios $GD_SCENARIOS (default: cone symmetric delay200): up, checks, down
#   sudo tests/nat/testbed.sh matrix # the network-fault matrix (RELIABILITY.md): scenarios, then a table
#
# Checks (run in the order given; 1 first): 1 all announce, all converge; 2 hole punch (cone) or
# relayed only (symmetric); 3 the undialable converged; 5 partition + heal; 6 crash (SIGKILL b1)
# + restart with the same key and data dir; 7 clock skew (pub at -60s, +60s: libfaketime);
# 8 steady state (no live record missing at any sample for 2 x TTL); 4 SIGKILL b2, SIGTERM pub.
#
# Scenarios (ci, matrix; --loss/--delay/--only given on the command line override theirs):
#   cone       NAT B cone-like,          checks 1,2,3,5,6,7,4   symmetric  NAT B symmetric, checks 1,2,3,5,4
#   faults     cone,                     checks 1,2,3,5,6,7,8,4 (partition, crash+restart, clock skew, steady state)
#   skew       cone,                     checks 1,7             delay200   cone, 200 ms each way at router B, checks 1,3,5,6,8
#   loss20     cone, 20 % loss at B,     checks 1,3,5,6,8       loss50     cone, 50 % loss at B, checks 1,3,5,6,8,
#                                                                           TTL 60 s (the node's default)
#
# Topology (every name starts with "gd-"; addresses are private and never leave the namespaces):
#
#   gd-inet ("internet"): bridge gd-br, 10.99.0.0/24, no route anywhere else
#     gd-relay 10.99.0.1   public bootstrap node and circuit relay v2 server (--external)
#     gd-pub   10.99.0.2   public node
#     gd-fw    10.99.0.3   public node behind a firewall dropping every inbound connection
#     gd-rta   10.99.0.11  router A: NAT (masquerade, endpoint-independent mapping) for
#                          LAN A 192.168.1.0/24 (bridge gd-lan inside gd-rta):
#                            gd-a1 192.168.1.10  --bootstrap relay --relay relay
#                            gd-a2 192.168.1.11  port 4102, nothing else: finds gd-a1 by mDNS only
#     gd-rtb   10.99.0.12  router B: NAT for LAN B 192.168.2.0/24, cone (as A) or symmetric
#                          (random port per connection: MASQUERADE --random-fully):
#                            gd-b1 192.168.2.10, gd-b2 192.168.2.11 port 4102 (--bootstrap, --relay)
#
# Both routers drop unsolicited inbound traffic (FORWARD and INPUT), like home routers; the
# firewall of gd-fw accepts only established/related traffic. Faults all sit at router B:
# --loss (iptables statistic), --delay (iptables NFQUEUE + tests/nat/netdelay, no netem needed),
# --netem (tc, needs sch_netem), a partition (check 5); a crash (check 6) and a skewed clock
# (check 7, libfaketime) are applied to nodes.
#
# Requires root, iproute2, iptables, jq, curl, ping and libfaketime (installed with apt-get when
# missing), and a gossipdir binary: $GOSSIPDIR_BIN, else target/release/gossipdir, else
# target/x86_64-unknown-linux-gnu/release/gossipdir (static: check 7 cannot preload libfaketime
# into it), else built with cargo; with --delay the netdelay binary: $GD_NETDELAY_BIN, else
# target/release/netdelay, else target/debug/netdelay (built with cargo when none exists).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE="${GD_STATE:-/tmp/gd-nat}"
INTERVAL="${GD_INTERVAL:-500ms}"
# Records live 10 s in the testbed (6x shorter than the node's default) so that expiry checks
# are quick; a scenario may ask for another TTL (S_TTL), GD_TTL_SECS overrides both.
BASE_TTL_SECS="${GD_TTL_SECS:-10}"
TTL_SECS="$BASE_TTL_SECS"
ROUND_MS=500
CAP="nat-test"
LAN_A=(a1 a2)
LAN_B=(b1 b2)
ALL_NODES=(relay pub fw a1 a2 b1 b2)
NAMESPACES=(gd-inet gd-relay gd-pub gd-fw gd-rta gd-rtb gd-a1 gd-a2 gd-b1 gd-b2)

declare -A IP=([relay]=10.99.0.1 [pub]=10.99.0.2 [fw]=10.99.0.3 [rta]=10.99.0.11 [rtb]=10.99.0.12
    [a1]=192.168.1.10 [a2]=192.168.1.11 [b1]=192.168.2.10 [b2]=192.168.2.11)

log() { printf '[%s] %s\n' "$(date +%T.%3N)" "$*"; }
die() { log "FAIL: $*"; exit 1; }
now_ms() { date +%s%3N; }
ns() { local n="$1"; shift; ip netns exec "gd-$n" "$@"; }

# A running process (not a zombie nobody reaped yet, which kill -0 would still find).
alive() { local st; st=$(ps -o stat= -p "$1" 2>/dev/null) && [ "${st:0:1}" != Z ]; }

need_root() { [ "$(id -u)" = 0 ] || die "run as root (network namespaces)"; }

ensure_tools() {
    local missing=()
    command -v ip >/dev/null || missing+=(iproute2)
    command -v iptables >/dev/null || missing+=(iptables)
    command -v tc >/dev/null || missing+=(iproute2)
    command -v jq >/dev/null || missing+=(jq)
    command -v curl >/dev/null || missing+=(curl)
    command -v ping >/dev/null || missing+=(iputils-ping)
    faketime_lib >/dev/null || missing+=(faketime)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >/dev/null ||
            die "cannot install ${missing[*]}"
    fi
}

# libfaketime, the multithreaded variant (the node runs tokio worker threads).
faketime_lib() {
    local f
    for f in /usr/lib/*/faketime/libfaketimeMT.so.1 /usr/lib/faketime/libfaketimeMT.so.1; do
        [ -e "$f" ] && { echo "$f"; return 0; }
    done
    return 1
}

# A binary LD_PRELOAD can reach (libfaketime): dynamically linked.
is_dynamic() { readelf -l "$1" 2>/dev/null | grep -q INTERP; }

find_bin() {
    # The dynamically linked build first: check 7 preloads libfaketime into it.
    if [ -n "${GOSSIPDIR_BIN:-}" ]; then
        BIN="$GOSSIPDIR_BIN"
    elif [ -x "$ROOT/target/release/gossipdir" ]; then
        BIN="$ROOT/target/release/gossipdir"
    elif [ -x "$ROOT/target/x86_64-unknown-linux-gnu/release/gossipdir" ]; then
        BIN="$ROOT/target/x86_64-unknown-linux-gnu/release/gossipdir"
    else
        log "building gossipdir (release)"
        (cd "$ROOT" && cargo build --release --locked --bin gossipdir) || die "build failed"
        BIN="$ROOT/target/release/gossipdir"
    fi
    [ -x "$BIN" ] || die "no gossipdir binary at $BIN"
}

# The packet delayer for --delay (tests/nat/netdelay, a workspace member).
find_netdelay() {
    if [ -n "${GD_NETDELAY_BIN:-}" ]; then
        NETDELAY="$GD_NETDELAY_BIN"
    elif [ -x "$ROOT/target/release/netdelay" ]; then
        NETDELAY="$ROOT/target/release/netdelay"
    elif [ -x "$ROOT/target/debug/netdelay" ]; then
        NETDELAY="$ROOT/target/debug/netdelay"
    else
        log "building netdelay (release)"
        (cd "$ROOT" && cargo build --release --locked -p gossipdir-netdelay) || die "netdelay build failed"
        NETDELAY="$ROOT/target/release/netdelay"
    fi
    [ -x "$NETDELAY" ] || die "no netdelay binary at $NETDELAY"
}

# ---- network ------------------------------------------------------------------------------

# veth pair created directly inside two of our namespaces, then renamed there.
veth() { # veth NS_A NAME_A NS_B NAME_B
    local t1="gdt$RANDOM$RANDOM" t2="gdu$RANDOM$RANDOM"
    t1="${t1:0:15}"
    t2="${t2:0:15}"
    ip link add "$t1" netns "$1" type veth peer name "$t2" netns "$3" || die "veth $1/$3"
    ip -n "$1" link set "$t1" name "$2"
    ip -n "$3" link set "$t2" name "$4"
}

net_up() {
    local nat="$1" netem="$2"
    for n in "${NAMESPACES[@]}"; do
        ip netns add "$n" || die "cannot create namespace $n (left over? run: $0 down)"
        ip -n "$n" link set lo up
    done
    # The internet: one bridge.
    ip -n gd-inet link add gd-br type bridge
    ip -n gd-inet link set gd-br up
    for h in relay pub fw rta rtb; do
        local wan=gd0
        case $h in rta | rtb) wan=wan ;; esac
        veth gd-inet "p-$h" "gd-$h" "$wan"
        ip -n gd-inet link set "p-$h" master gd-br
        ip -n gd-inet link set "p-$h" up
        ip -n "gd-$h" addr add "${IP[$h]}/24" dev "$wan"
        ip -n "gd-$h" link set "$wan" up
    done
    # LANs: a bridge inside each router, the router's address on it, a default route to it.
    local r net
    for r in a b; do
        if [ $r = a ]; then net=192.168.1; else net=192.168.2; fi
        ip -n "gd-rt$r" link add gd-lan type bridge
        # Bridged LAN frames must not traverse the router's iptables (br_netfilter, loaded by
        # Docker, is on by default in new namespaces): mDNS multicast would be dropped.
        ns "rt$r" sysctl -qw net.bridge.bridge-nf-call-iptables=0 2>/dev/null
        ip -n "gd-rt$r" addr add "$net.1/24" dev gd-lan
        ip -n "gd-rt$r" link set gd-lan up
        for h in "$r"1 "$r"2; do
            veth "gd-rt$r" "p-$h" "gd-$h" gd0
            ip -n "gd-rt$r" link set "p-$h" master gd-lan
            ip -n "gd-rt$r" link set "p-$h" up
            ip -n "gd-$h" addr add "${IP[$h]}/24" dev gd0
            ip -n "gd-$h" link set gd0 up
            ip -n "gd-$h" route add default via "$net.1"
        done
        # Router: forward LAN -> WAN, masquerade, drop unsolicited inbound.
        ns "rt$r" sysctl -qw net.ipv4.ip_forward=1
        local random=""
        if [ $r = b ] && [ "$nat" = symmetric ]; then random="--random-fully"; fi
        ns "rt$r" iptables -t nat -A POSTROUTING -o wan -j MASQUERADE $random
        ns "rt$r" iptables -P FORWARD DROP
        ns "rt$r" iptables -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
        ns "rt$r" iptables -A FORWARD -i gd-lan -o wan -j ACCEPT
        ns "rt$r" iptables -A FORWARD -i gd-lan -o gd-lan -j ACCEPT
        ns "rt$r" iptables -A INPUT -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
        ns "rt$r" iptables -A INPUT -i wan -j DROP
    done
    # The firewalled public node: nothing inbound but answers to what it started.
    ns fw iptables -A INPUT -i lo -j ACCEPT
    ns fw iptables -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
    ns fw iptables -P INPUT DROP
    if [ -n "$netem" ]; then
        # shellcheck disable=SC2086
        ns rtb tc qdisc add dev wan root netem $netem ||
            die "tc netem $netem (is sch_netem in this kernel? --loss works without it)"
        log "netem on router B's WAN link: $netem"
    fi
    if [ -n "$LOSS" ]; then
        # Random loss without netem: iptables' statistic match on everything router B forwards.
        ns rtb iptables -I FORWARD 1 -m statistic --mode random --probability "$LOSS" -j DROP ||
            die "iptables statistic match"
        log "random loss $LOSS on everything router B forwards (both directions)"
    fi
    if [ -n "$DELAY" ]; then delay_up; fi
    echo "$nat" >"$STATE/nat"
    echo "$netem" >"$STATE/netem"
    log "network up: NAT B = $nat"
    if [ -n "$LOSS$DELAY$netem" ]; then net_measure; fi
}

# --delay: router B hands its WAN traffic to NFQUEUE 0, read by netdelay inside gd-rtb, which
# accepts each packet after the delay (sch_netem is not needed).
delay_up() {
    local dirs d
    case $DELAY_DIR in
        both) dirs="out in" ;;
        out | in) dirs=$DELAY_DIR ;;
        *) die "--delay-dir both|out|in" ;;
    esac
    # The delayer first: a packet sent to a queue nobody reads is dropped.
    : >"$STATE/netdelay.log"
    ip netns exec gd-rtb "$NETDELAY" --queue 0 --delay "$DELAY" >>"$STATE/netdelay.log" 2>&1 &
    echo $! >"$STATE/netdelay.pid"
    disown
    local deadline=$(($(now_ms) + 5000))
    until grep -q '^netdelay: queue' "$STATE/netdelay.log" 2>/dev/null; do
        alive "$(cat "$STATE/netdelay.pid")" ||
            die "netdelay did not start: $(tail -n 3 "$STATE/netdelay.log")"
        [ "$(now_ms)" -lt "$deadline" ] || die "netdelay did not bind its queue within 5 s"
        sleep 0.05
    done
    # Every packet router B receives from LAN B (to forward, NATed flows and relayed circuits
    # alike, or for itself) or from the internet (replies to de-NAT, or for itself) passes raw
    # PREROUTING; what it sends itself, raw OUTPUT. The raw table runs BEFORE conntrack: a packet
    # held there has no conntrack entry yet, and the ones released after it find the entry it
    # created. Held any later (mangle FORWARD, say), the first packet of a flow sits on an
    # unconfirmed entry, and the next ones of that flow sent within the delay clash with it and
    # are dropped at confirmation (measured: 3 of 40 pings at 50 ms, 200 ms delay). --loss
    # (filter FORWARD) drops after the delay. LAN-internal traffic is bridged: not delayed.
    for d in $dirs; do
        if [ "$d" = out ]; then # LAN B -> internet
            ns rtb iptables -t raw -A PREROUTING -i gd-lan -j NFQUEUE --queue-num 0 || die "iptables NFQUEUE"
            ns rtb iptables -t raw -A OUTPUT -o wan -j NFQUEUE --queue-num 0 || die "iptables NFQUEUE"
        else # internet -> LAN B
            ns rtb iptables -t raw -A PREROUTING -i wan -j NFQUEUE --queue-num 0 || die "iptables NFQUEUE"
        fi
    done
    log "delay $DELAY per direction ($DELAY_DIR) on everything router B routes between LAN B and the internet, and sends or receives itself: NFQUEUE 0 -> netdelay (pid $(cat "$STATE/netdelay.pid"))"
}

# What the fault does to a ping through router B (b1 -> pub) against one through router A.
net_measure() {
    local b a
    # 40 pings, then -W 3: up to 3 s for the late replies (a delayed reply is not a lost one).
    b=$(ns b1 ping -q -n -c 40 -i 0.05 -W 3 "${IP[pub]}" 2>&1 | ping_summary)
    a=$(ns a1 ping -q -n -c 10 -i 0.05 -W 3 "${IP[pub]}" 2>&1 | ping_summary)
    log "    ping b1 -> pub through router B (40, every 50 ms): $b; a1 -> pub through router A: $a"
    echo "b1->pub: $b; a1->pub: $a" >"$STATE/net"
}
ping_summary() {
    awk -F'[/ ]+' '/packet loss/ { sent = $1; got = $4; for (i = 1; i <= NF; i++) if ($i ~ /%$/) loss = $i }
        /^rtt/ { avg = $8; max = $9 }
        END { printf "%s/%s answered (%s lost), rtt avg %s ms max %s ms", got, sent, loss, avg ? avg : "-", max ? max : "-" }'
}

# ---- nodes --------------------------------------------------------------------------------

api() { ns "$1" "$BIN" "${@:2}"; }
peer_of() { cat "$STATE/$1/peer"; }
relay_addr() { echo "/ip4/${IP[relay]}/tcp/4101/p2p/$(peer_of relay)"; }

NODE_ENV=()  # extra VAR=value for the next start_node (libfaketime)
NODE_BIN="" # another binary for the next start_node (default $BIN)

start_node() { # start_node NAME ARGS...
    local n="$1"
    shift
    mkdir -p "$STATE/$n"
    [ -f "$STATE/$n/key" ] || "$BIN" keygen --out "$STATE/$n/key" >"$STATE/$n/peer"
    printf '%s\0' "$@" >"$STATE/$n/args" # for restart_node
    echo "--- start $(date +%T.%3N) ${NODE_ENV[*]}" >>"$STATE/$n/node.log"
    # A simple command, not the ns function: $! is then the node's own pid (exec chain).
    ip netns exec "gd-$n" env RUST_LOG="${GD_RUST_LOG:-info,libp2p_dcutr=debug,libp2p_relay=debug}" \
        ${NODE_ENV[@]+"${NODE_ENV[@]}"} "${NODE_BIN:-$BIN}" node --key "$STATE/$n/key" --data-dir "$STATE/$n" \
        --interval "$INTERVAL" --ttl "${TTL_SECS}s" "$@" \
        >>"$STATE/$n/node.log" 2>&1 &
    echo $! >"$STATE/$n/pid"
    disown
}

# The same node again: same key, same data dir (issuer state), same arguments.
restart_node() {
    local args=()
    mapfile -d '' -t args <"$STATE/$1/args"
    start_node "$1" ${args[@]+"${args[@]}"}
}

# stop_node NAME SIGNAL: signal the node and wait until it has exited (10 s at most).
stop_node() {
    local pid _
    pid=$(cat "$STATE/$1/pid")
    kill -"$2" "$pid" 2>/dev/null
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    log "    node $1 (pid $pid) still running 10 s after SIG$2: SIGKILL"
    kill -KILL "$pid" 2>/dev/null
    sleep 0.2
}

wait_api() {
    local n="$1" deadline=$(($(now_ms) + 10000))
    until api "$n" status --json >/dev/null 2>&1; do
        [ "$(now_ms)" -lt "$deadline" ] || die "node $n: API not up (see $STATE/$n/node.log)"
        sleep 0.1
    done
}

nodes_up() {
    for n in "${ALL_NODES[@]}"; do
        mkdir -p "$STATE/$n"
        [ -f "$STATE/$n/key" ] || "$BIN" keygen --out "$STATE/$n/key" >"$STATE/$n/peer"
    done
    local relay
    relay="$(relay_addr)"
    start_node relay --no-mdns --relay-server --external "/ip4/${IP[relay]}/tcp/4101" \
        --external "/ip4/${IP[relay]}/udp/4101/quic-v1"
    wait_api relay
    start_node pub --no-mdns --bootstrap "$relay" --external "/ip4/${IP[pub]}/tcp/4101"
    start_node fw --no-mdns --bootstrap "$relay"
    # One port per node behind a NAT (docs/NAT.md): two nodes of one LAN on the same port make
    # the router remap one of them, and DCUtR then punches towards the other's mapping.
    local second=(--listen /ip4/0.0.0.0/tcp/4102 --listen /ip4/0.0.0.0/udp/4102/quic-v1)
    start_node a1 --bootstrap "$relay" --relay "$relay"
    start_node a2 "${second[@]}"
    start_node b1 --bootstrap "$relay" --relay "$relay"
    start_node b2 --bootstrap "$relay" --relay "$relay" "${second[@]}"
    for n in "${ALL_NODES[@]}"; do wait_api "$n"; done
    log "nodes up: $(for n in "${ALL_NODES[@]}"; do printf '%s=%s ' "$n" "$(peer_of "$n" | tail -c 8)"; done)"
}

# ---- teardown -----------------------------------------------------------------------------

down() {
    local n pid
    # Our processes: the recorded pids, then anything still running inside our namespaces.
    local f
    for f in "$STATE"/*/pid "$STATE/netdelay.pid"; do
        [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null
    done
    local pids=""
    for n in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^gd-'); do
        pids+=" $(ip netns pids "$n" 2>/dev/null | tr '\n' ' ')"
    done
    for pid in $pids; do kill -KILL "$pid" 2>/dev/null; done
    local _
    for _ in $(seq 50); do
        local alive=0
        for pid in $pids; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for n in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^gd-'); do
        ip netns del "$n" 2>/dev/null
    done
    rm -f "$STATE"/*/pid "$STATE/netdelay.pid"
    if ip netns list 2>/dev/null | grep -q '^gd-'; then
        log "WARNING: namespaces left: $(ip netns list | grep '^gd-' | tr '\n' ' ')"
        return 1
    fi
    return 0
}

# ---- measurements -------------------------------------------------------------------------

# Names of live nat-test specialists a node holds, sorted, one line.
names_at() { api "$1" query --capability "$CAP" --json 2>/dev/null | jq -r '[.[].name] | sort | join(",")'; }
# The same with versions: "name=seq,..." (sorted by name).
view_at() { api "$1" query --capability "$CAP" --json 2>/dev/null | jq -r 'sort_by(.name) | map("\(.name)=\(.seq)") | join(",")'; }
# One held record's field (seq, issued_at, expires_at) at a node, empty when not held.
field_at() { api "$1" query --capability "$CAP" --json 2>/dev/null | jq -r --arg n "$2" --arg f "$3" '.[] | select(.name == $n) | .[$f]'; }
round_at() { api "$1" status --json 2>/dev/null | jq -r '.round'; }
metric_at() { # metric_at NODE NAME -> value (0 when absent); NAME may carry labels: x{reason="expired"}
    ns "$1" curl -s --max-time 2 http://127.0.0.1:5170/metrics |
        awk -v m="$2" '$1 == m || index($1, m"{") == 1 { s += $2 } END { print s + 0 }'
}

# Deadlines stretch with the fault: x2 under loss or delay, x4 under loss >= 30 % ($GD_SLOW).
slow_factor() {
    if [ -n "${GD_SLOW:-}" ]; then echo "$GD_SLOW"; return; fi
    awk -v l="${LOSS:-0}" -v d="${DELAY}${NETEM}" 'BEGIN { f = 1; if (d != "" || l > 0) f = 2; if (l >= 0.3) f = 4; print f }'
}
dl() { echo $(($1 * SLOW)); }

# wait_names NODES EXPECTED TIMEOUT_MS -> sets WAITED_MS; EXPECTED is a sorted comma list.
wait_names() {
    local nodes="$1" expected="$2" timeout="$3" start deadline n ok
    start=$(now_ms)
    deadline=$((start + timeout))
    while :; do
        ok=1
        for n in $nodes; do
            if [ "$(names_at "$n")" != "$expected" ]; then ok=0; break; fi
        done
        WAITED_MS=$(($(now_ms) - start))
        [ $ok = 1 ] && return 0
        [ "$(now_ms)" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

# wait_cond TIMEOUT_MS COMMAND... -> runs COMMAND until it succeeds; sets WAITED_MS.
wait_cond() {
    local timeout="$1" start
    shift
    start=$(now_ms)
    while :; do
        if "$@"; then WAITED_MS=$(($(now_ms) - start)); return 0; fi
        WAITED_MS=$(($(now_ms) - start))
        [ "$WAITED_MS" -lt "$timeout" ] || return 1
        sleep 0.2
    done
}

# missing_at NODES EXPECTED: one line "node:name" per expected record a node does not hold.
missing_at() {
    local n have x
    for n in $1; do
        have=",$(names_at "$n"),"
        for x in ${2//,/ }; do
            case $have in *,"$x",*) ;; *) echo "$n:$x" ;; esac
        done
    done
}
count_lines() { grep -c . || true; }

# watch_live SECS NODES EXPECTED: samples every node (about 2 samples a second) for SECS; sets
# WATCH_SAMPLES, WATCH_GAPS (samples where some node lacked some live record), WATCH_MISSED
# (node:record pairs ever missing, with how many samples) and WATCH_END (missing at the last).
watch_live() {
    local secs="$1" nodes="$2" expected="$3" end miss all=""
    end=$(($(now_ms) + secs * 1000))
    WATCH_SAMPLES=0
    WATCH_GAPS=0
    WATCH_END=""
    while :; do
        miss=$(missing_at "$nodes" "$expected" | paste -sd' ' -)
        WATCH_SAMPLES=$((WATCH_SAMPLES + 1))
        if [ -n "$miss" ]; then
            WATCH_GAPS=$((WATCH_GAPS + 1))
            all+=" $miss"
        fi
        WATCH_END="$miss"
        [ "$(now_ms)" -lt "$end" ] || break
        sleep 0.3
    done
    WATCH_MISSED=$(echo "$all" | tr ' ' '\n' | grep -v '^$' | sort | uniq -c | awk '{ printf "%s(x%s) ", $2, $1 }')
}

show_names() { local x; for x in $1; do log "    $x holds: $(names_at "$x")"; done; }

join_sorted() { tr ' ' '\n' | grep -v '^$' | sort | paste -sd, -; }
yesno() { if [ "$1" = 0 ]; then echo yes; else echo NO; fi; }

# The live nodes (check 4 takes two away) and their specialists.
LIVE=("${ALL_NODES[@]}")
expected_live() { local x; for x in "${LIVE[@]}"; do echo "spec-$x"; done | join_sorted; }

PASS=()
FAIL=()
verdict() { # verdict CHECK OK MESSAGE
    if [ "$2" = 0 ]; then PASS+=("$1"); log "PASS $1: $3"; else FAIL+=("$1"); log "FAIL $1: $3"; fi
}

# One line of the fault matrix: row FAULT CONVERGED TIME LOST DETAIL (tab-separated, in $ROWS).
SCEN="${GD_SCENARIO:-manual}"
ROWS=""
row() {
    [ -n "$ROWS" ] || return 0
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$SCEN" "$1" "$2" "$3" "$4" "$5" >>"$ROWS"
}
faults_desc() {
    local d=""
    [ -n "$LOSS" ] && d+="${LOSS} loss at B, "
    [ -n "$DELAY" ] && d+="${DELAY} delay per direction at B, "
    [ -n "$NETEM" ] && d+="netem $NETEM, "
    echo "${d%, }"
}

check1() {
    log "check 1: every node announces one specialist; every node converges to all of them"
    local live="$*" expected n
    declare -A r0s
    for n in $live; do r0s[$n]=$(round_at "$n"); done
    for n in $live; do
        api "$n" announce --name "spec-$n" --capability "$CAP" --endpoint "https://$n.example/v1" >/dev/null ||
            { verdict 1 1 "announce on $n failed"; return; }
    done
    expected=$(for n in $live; do echo "spec-$n"; done | join_sorted)
    local deadline
    deadline=$(dl 30000)
    if wait_names "$live" "$expected" "$deadline"; then
        local rounds="" maxr=0 d
        for n in $live; do
            d=$(($(round_at "$n") - r0s[$n]))
            rounds+="$n:$d "
            [ $d -gt $maxr ] && maxr=$d
        done
        verdict 1 0 "all ${#r0s[@]} nodes hold all ${#r0s[@]} specialists after ${WAITED_MS} ms; rounds run meanwhile (status.round delta): $rounds(max $maxr)"
        row "announce: 7 nodes, 7 new specialists" yes "${WAITED_MS} ms" 0 "max $maxr rounds"
    else
        show_names "$live"
        local lost
        lost=$(missing_at "$live" "$expected" | count_lines)
        verdict 1 1 "not converged within $((deadline / 1000)) s"
        row "announce: 7 nodes, 7 new specialists" no "> ${deadline} ms" "$lost" "missing at the deadline"
    fi
}

# Connections between LAN A and LAN B nodes, from A's side: lines "a b connected relayed".
ab_links() {
    local a b pb
    for a in "${LAN_A[@]}"; do
        local peers
        peers=$(api "$a" peers --json 2>/dev/null) || continue
        for b in "${LAN_B[@]}"; do
            [ -f "$STATE/$b/peer" ] || continue
            pb=$(peer_of "$b")
            echo "$peers" | jq -r --arg p "$pb" --arg a "$a" --arg b "$b" \
                '.[] | select(.peer_id == $p) | "\($a) \($b) \(.connected) \(.relayed)"'
        done
    done
}

holepunch_report() {
    local n out=""
    for n in a1 a2 b1 b2; do
        out+="$n: attempts=$(metric_at "$n" gossipdir_holepunch_attempts_total) successes=$(metric_at "$n" gossipdir_holepunch_successes_total) relayed_conns=$(api "$n" status --json | jq .connections.relayed); "
    done
    echo "$out"
}

check2() {
    local nat
    nat=$(cat "$STATE/nat")
    log "check 2: LAN A <-> LAN B connections (NAT B: $nat)"
    local start deadline links direct relayed
    start=$(now_ms)
    deadline=$((start + $(dl 45000)))
    while :; do
        links=$(ab_links)
        direct=$(echo "$links" | awk '$3 == "true" && $4 == "false"' | head -1)
        relayed=$(echo "$links" | awk '$3 == "true" && $4 == "true"' | head -1)
        if [ "$nat" = cone ] && [ -n "$direct" ]; then break; fi
        if [ "$nat" = symmetric ] && [ -n "$relayed" ] && [ $(($(now_ms) - start)) -ge 20000 ]; then break; fi
        [ "$(now_ms)" -lt "$deadline" ] || break
        sleep 0.5
    done
    local waited=$(($(now_ms) - start))
    log "    A-B links after ${waited} ms (a b connected relayed):"
    echo "$links" | sed 's/^/        /'
    local hp
    hp=$(holepunch_report)
    log "    hole punch metrics: $hp"
    if [ "$nat" = cone ]; then
        if [ -n "$direct" ]; then
            verdict 2 0 "direct (hole-punched) connection $direct within ${waited} ms; $hp"
        else
            verdict 2 1 "no direct A-B connection within $(($(dl 45000) / 1000)) s; $hp"
        fi
    else
        local any_direct
        any_direct=$(echo "$links" | awk '$3 == "true" && $4 == "false"' | head -1)
        if [ -z "$any_direct" ] && [ -n "$relayed" ]; then
            verdict 2 0 "symmetric NAT: A-B stay relayed ($relayed), no direct connection after ${waited} ms, directory converged (check 1); $hp"
        else
            verdict 2 1 "symmetric NAT: direct='$any_direct' relayed='$relayed'; $hp"
        fi
    fi
}

check3() {
    log "check 3: the undialable nodes (firewalled fw, NATed a1 a2 b1 b2) converged"
    local bad=0 msg=""
    # Nobody can dial them: a TCP connect from the public node times out.
    for target in "fw ${IP[fw]}" "rta ${IP[rta]}" "rtb ${IP[rtb]}"; do
        set -- $target
        if ns pub timeout 2 bash -c "exec 3<>/dev/tcp/$2/4101" 2>/dev/null; then
            msg+="$1 ($2:4101) ACCEPTS inbound TCP (unexpected); "
            bad=1
        else
            msg+="$1 ($2:4101) unreachable inbound; "
        fi
    done
    local expected n
    expected=$(for n in "${ALL_NODES[@]}"; do echo "spec-$n"; done | join_sorted)
    for n in fw a1 a2 b1 b2; do
        local held st
        held=$(names_at "$n")
        st=$(api "$n" status --json)
        msg+="$n: $(echo "$held" | tr ',' '\n' | grep -c .)/${#ALL_NODES[@]} specialists, nat_status=$(echo "$st" | jq -r .nat_status), conns=$(echo "$st" | jq -c .connections); "
        [ "$held" = "$expected" ] || bad=1
    done
    verdict 3 $bad "$msg"
}

others_than() { local x out=""; for x in $2; do [ "$x" = "$1" ] || out+="$x "; done; echo "$out"; }

check4() {
    log "check 4: SIGKILL b2 (gone within TTL + a few rounds), SIGTERM pub (gone within a few rounds)"
    local live="${LIVE[*]}" expected
    # SIGKILL
    kill -KILL "$(cat "$STATE/b2/pid")"
    live=$(others_than b2 "$live")
    read -ra LIVE <<<"$live"
    expected=$(expected_live)
    local bound=$((TTL_SECS * 1000 + 6 * ROUND_MS))
    if wait_names "$live" "$expected" $((bound + $(dl 10000))); then
        local ok=0
        [ "$WAITED_MS" -le "$bound" ] || ok=1
        verdict 4a $ok "SIGKILLed b2 gone from all ${live// /,}after ${WAITED_MS} ms (bound TTL ${TTL_SECS}s + 6 rounds = ${bound} ms)"
    else
        show_names "$live"
        verdict 4a 1 "SIGKILLed b2 still held after $((bound + $(dl 10000))) ms"
    fi
    # SIGTERM
    kill -TERM "$(cat "$STATE/pub/pid")"
    live=$(others_than pub "$live")
    read -ra LIVE <<<"$live"
    expected=$(expected_live)
    bound=$((8 * ROUND_MS))
    if wait_names "$live" "$expected" $((bound + $(dl 15000))); then
        local ok=0
        [ "$WAITED_MS" -le "$bound" ] || ok=1
        verdict 4b $ok "SIGTERMed pub gone from all after ${WAITED_MS} ms (bound 8 rounds = ${bound} ms)"
    else
        show_names "$live"
        verdict 4b 1 "SIGTERMed pub still held after $((bound + $(dl 15000))) ms"
    fi
}

check5() {
    log "check 5: partition router B off, announce on both sides, heal"
    local inside="b1 b2" outside="relay pub fw a1 a2"
    ip -n gd-inet link set p-rtb down
    local t0
    t0=$(now_ms)
    api a1 announce --name "part-a1" --capability "$CAP" >/dev/null
    api b1 announce --name "part-b1" --capability "$CAP" >/dev/null
    # Each side sees its own news only.
    sleep 3
    local in_b out_a leak=0
    in_b=$(names_at b2)
    out_a=$(names_at pub)
    case ",$in_b," in *,part-a1,*) leak=1 ;; esac
    case ",$out_a," in *,part-b1,*) leak=1 ;; esac
    local sides_ok=0
    case ",$in_b," in *,part-b1,*) ;; *) sides_ok=1 ;; esac
    case ",$out_a," in *,part-a1,*) ;; *) sides_ok=1 ;; esac
    log "    during partition ($(($(now_ms) - t0)) ms): b2 holds part-*: $(echo "$in_b" | tr ',' '\n' | grep part | paste -sd,); pub holds part-*: $(echo "$out_a" | tr ',' '\n' | grep part | paste -sd,)"
    ip -n gd-inet link set p-rtb up
    local healed
    healed=$(now_ms)
    # Converged to the union: both part-* everywhere (other records may have expired meanwhile).
    local deadline ok=1 n
    deadline=$((healed + $(dl 30000)))
    while [ "$(now_ms)" -lt "$deadline" ]; do
        ok=0
        for n in $inside $outside; do
            case ",$(names_at "$n")," in *,part-a1,*part-b1,* | *,part-b1,*part-a1,*) ;; *) ok=1; break ;; esac
        done
        [ $ok = 0 ] && break
        sleep 0.2
    done
    local waited=$(($(now_ms) - healed)) all_ok=1
    expected=$(for n in "${ALL_NODES[@]}"; do echo "spec-$n"; done; echo part-a1; echo part-b1)
    expected=$(echo "$expected" | join_sorted)
    WAITED_MS=0
    if [ $ok = 0 ]; then
        wait_names "$inside $outside" "$expected" "$(dl 30000)" && all_ok=0
    fi
    local msg
    msg="leak during partition: $leak, each side saw its own: $(yesno $sides_ok), "
    if [ $ok = 0 ]; then
        msg+="union part-a1+part-b1 everywhere $waited ms after heal (~$((waited / ROUND_MS)) rounds), "
        if [ $all_ok = 0 ]; then
            msg+="full directory (7 specialists + 2) everywhere $((waited + WAITED_MS)) ms after heal"
        else
            msg+="full directory (7 specialists + 2) NOT everywhere $((waited + WAITED_MS)) ms after heal"
        fi
    else
        msg+="union part-a1+part-b1 NOT everywhere $waited ms after heal"
    fi
    if [ $leak = 0 ] && [ $sides_ok = 0 ] && [ $ok = 0 ] && [ $all_ok = 0 ]; then
        verdict 5 0 "$msg"
        row "partition of LAN B (link cut), news on both sides, heal" yes "$((waited + WAITED_MS)) ms" 0 "union of the news everywhere after $waited ms; no leak during the cut"
    else
        show_names "$inside $outside"
        verdict 5 1 "$msg"
        row "partition of LAN B (link cut), news on both sides, heal" no "-" "$(missing_at "$inside $outside" "$expected" | count_lines)" "leak=$leak; missing at the deadline"
    fi
    # Leave the directory as check 4 expects it.
    api a1 withdraw --name part-a1 >/dev/null
    api b1 withdraw --name part-b1 >/dev/null
    expected=$(for n in "${ALL_NODES[@]}"; do echo "spec-$n"; done | join_sorted)
    wait_names "$inside $outside" "$expected" "$(dl 15000)" || log "    (withdrawals of part-* not everywhere after $(dl 15) s)"
}

# Check 6's convergence: every live node holds exactly EXPECTED, with spec-NODE at version SEQ.
holds_version() { # holds_version NODES EXPECTED NAME SEQ
    local x v
    for x in $1; do
        v=$(view_at "$x")
        [ "$(echo "$v" | tr ',' '\n' | cut -d= -f1 | paste -sd, -)" = "$2" ] || return 1
        case ",$v," in *,"$3=$4",*) ;; *) return 1 ;; esac
    done
}

check6() {
    local n="${GD_CRASH_NODE:-b1}"
    log "check 6: SIGKILL $n, restart it with the same key and data dir, re-announce: its new versions accepted everywhere"
    local live="${LIVE[*]}" persisted held t0 up_ms new_seq expected peer_ok=0 x
    persisted=$(jq -r --arg s "spec-$n" '.[$s].seq // 0' "$STATE/$n/issued.json" 2>/dev/null)
    held=$(field_at relay "spec-$n" seq)
    stop_node "$n" KILL
    t0=$(now_ms)
    restart_node "$n"
    wait_api "$n"
    up_ms=$(($(now_ms) - t0))
    [ "$(api "$n" status --json | jq -r .peer_id)" = "$(peer_of "$n")" ] || peer_ok=1
    # The same name (a new version of the record the others hold) and a new one.
    if ! api "$n" announce --name "spec-$n" --capability "$CAP" --endpoint "https://$n.example/v2" >/dev/null ||
        ! api "$n" announce --name "crash-$n" --capability "$CAP" >/dev/null; then
        verdict 6 1 "announce on the restarted $n failed"
        return
    fi
    local t_ann
    t_ann=$(now_ms)
    new_seq=$(field_at "$n" "spec-$n" seq)
    expected=$( (for x in $live; do echo "spec-$x"; done; echo "crash-$n") | join_sorted)
    local ok=0 lost=0
    if wait_cond "$(dl 30000)" holds_version "$live" "$expected" "spec-$n" "$new_seq"; then
        ok=0
    else
        ok=1
        lost=$(missing_at "$live" "$expected" | count_lines)
        show_names "$live"
    fi
    local conv_ms=$(($(now_ms) - t0)) ann_ms=$(($(now_ms) - t_ann))
    local seq_ok=0
    [ -n "$new_seq" ] && [ "$new_seq" -gt "${persisted:-0}" ] && [ "$new_seq" -gt "${held:-0}" ] || seq_ok=1
    local msg
    msg="restarted $n answered after $up_ms ms (same peer id: $(yesno $peer_ok)); spec-$n seq persisted $persisted, held by relay $held, new $new_seq (newer: $(yesno $seq_ok)); new spec-$n and crash-$n at every live node $ann_ms ms after announcing, $conv_ms ms after the restart"
    if [ $ok = 0 ] && [ $seq_ok = 0 ] && [ $peer_ok = 0 ]; then
        verdict 6 0 "$msg"
        row "crash: SIGKILL $n, restart with same key + data dir, re-announce" yes "$conv_ms ms" 0 "new version (seq $persisted -> $new_seq) everywhere $ann_ms ms after re-announcing"
    else
        verdict 6 1 "$msg"
        row "crash: SIGKILL $n, restart with same key + data dir, re-announce" no "> $conv_ms ms" "$lost" "seq $persisted -> $new_seq"
    fi
    api "$n" withdraw --name "crash-$n" >/dev/null
    wait_names "$live" "$(expected_live)" "$(dl 15000)" || log "    (withdrawal of crash-$n not everywhere after $(dl 15) s)"
}

check7() {
    local n="${GD_SKEW_NODE:-pub}" offsets="${GD_SKEW:--60s +60s}" lib sbin off
    log "check 7: node $n restarted with its wall clock skewed by $offsets (libfaketime; monotonic clock left alone)"
    if ! lib=$(faketime_lib); then
        verdict 7 1 "libfaketime not installed (apt-get install faketime)"
        return
    fi
    sbin="$BIN"
    if ! is_dynamic "$sbin"; then
        if is_dynamic "$ROOT/target/release/gossipdir"; then
            sbin="$ROOT/target/release/gossipdir"
            log "    $BIN is statically linked (LD_PRELOAD cannot reach it): the skewed node runs $sbin"
        else
            verdict 7 1 "$BIN is statically linked: libfaketime cannot be preloaded (set GOSSIPDIR_BIN to a dynamic build)"
            return
        fi
    fi
    local live="${LIVE[*]}" expected t0 skew conv watch_s
    expected=$(expected_live)
    watch_s=$((2 * TTL_SECS + 5))
    for off in $offsets; do
        stop_node "$n" TERM
        t0=$(now_ms)
        NODE_ENV=(LD_PRELOAD="$lib" FAKETIME="$off" FAKETIME_DONT_FAKE_MONOTONIC=1)
        NODE_BIN="$sbin"
        restart_node "$n"
        NODE_ENV=()
        NODE_BIN=""
        wait_api "$n"
        local before
        before=$(now_ms)
        api "$n" announce --name "spec-$n" --capability "$CAP" --endpoint "https://$n.example/skewed" >/dev/null ||
            log "    announce on the skewed $n failed"
        # The skew as the records show it: issued_at (the node's clock) against ours.
        skew=$(field_at "$n" "spec-$n" issued_at)
        if [ -n "$skew" ]; then skew=$((skew - before)); else skew="?"; fi
        conv="no"
        if wait_names "$live" "$expected" "$(dl 30000)"; then conv="yes"; fi
        local conv_ms=$(($(now_ms) - t0))
        watch_live "$watch_s" "$live" "$expected"
        # Again after the watch: the refreshed record, issued once the node had heard its peers.
        local skew_end
        skew_end=$(field_at "$n" "spec-$n" issued_at)
        if [ -n "$skew_end" ]; then skew_end="$((skew_end - $(now_ms))) ms (record refreshed every $((TTL_SECS / 3)) s)"; else skew_end="?"; fi
        local offm
        offm="expired rejected: relay $(metric_at relay 'gossipdir_rejected_records_total{reason="expired"}'), $n $(metric_at "$n" 'gossipdir_rejected_records_total{reason="expired"}'); too_far_future rejected: relay $(metric_at relay 'gossipdir_rejected_records_total{reason="too_far_future"}'), $n $(metric_at "$n" 'gossipdir_rejected_records_total{reason="too_far_future"}'); clock_offset_ms: $n $(metric_at "$n" gossipdir_clock_offset_ms), relay $(metric_at relay gossipdir_clock_offset_ms)"
        local lost
        lost=$(echo "$WATCH_END" | tr ' ' '\n' | count_lines)
        local msg="$n at $off (its spec record's issued_at - our clock: $skew ms at the announce, $skew_end after the watch): converged: $conv ($conv_ms ms after the restart); then ${watch_s} s watched, $WATCH_SAMPLES samples, $WATCH_GAPS with a live record missing somewhere${WATCH_MISSED:+: $WATCH_MISSED}; missing at the end: ${WATCH_END:-none}; $offm"
        if [ "$conv" = yes ] && [ "$WATCH_GAPS" = 0 ]; then
            verdict "7($off)" 0 "$msg"
            row "clock skew: $n restarted at $off (libfaketime)" yes "$conv_ms ms" 0 "then every live record everywhere for ${watch_s} s ($WATCH_SAMPLES samples); its record's issued_at - true time: $skew ms at the announce, ${skew_end% (*} after; clock_offset_ms $(metric_at "$n" gossipdir_clock_offset_ms)"
        else
            show_names "$live"
            verdict "7($off)" 1 "$msg"
            row "clock skew: $n restarted at $off (libfaketime)" "$conv, not kept" "$conv_ms ms" "$lost" "gaps in $WATCH_GAPS of $WATCH_SAMPLES samples: ${WATCH_MISSED% }; expired rejected at relay $(metric_at relay 'gossipdir_rejected_records_total{reason="expired"}'), at $n $(metric_at "$n" 'gossipdir_rejected_records_total{reason="expired"}')"
        fi
    done
    # Back to the true clock, so the checks after this one start from a sound directory.
    stop_node "$n" TERM
    restart_node "$n"
    wait_api "$n"
    api "$n" announce --name "spec-$n" --capability "$CAP" --endpoint "https://$n.example/v1" >/dev/null
    wait_names "$live" "$expected" "$(dl 30000)" ||
        { log "    after $n's clock is true again, not converged within $(dl 30) s:"; show_names "$live"; }
}

check8() {
    local secs="${GD_WATCH_SECS:-$((2 * TTL_SECS))}" live="${LIVE[*]}" expected conv="yes" conv_ms
    expected=$(expected_live)
    log "check 8: steady state${LOSS:+ under ${LOSS} loss}${DELAY:+ under ${DELAY} delay}: every live node holds every live specialist, sampled for $secs s"
    wait_names "$live" "$expected" "$(dl 30000)" || conv="no"
    conv_ms=$WAITED_MS
    watch_live "$secs" "$live" "$expected"
    local lost
    lost=$(echo "$WATCH_END" | tr ' ' '\n' | count_lines)
    local msg="converged: $conv (after $conv_ms ms); $WATCH_SAMPLES samples over $secs s (${#LIVE[@]} nodes x ${#LIVE[@]} records each), $WATCH_GAPS with a live record missing somewhere${WATCH_MISSED:+: $WATCH_MISSED}; missing at the end: ${WATCH_END:-none}"
    local what="steady state, $secs s sampled"
    if [ "$conv" = yes ] && [ "$WATCH_GAPS" = 0 ]; then
        verdict 8 0 "$msg"
        row "$what" yes "-" 0 "$WATCH_SAMPLES samples, every live record at every node in each"
    else
        verdict 8 1 "$msg"
        row "$what" "$conv, gaps" "-" "$lost" "gaps in $WATCH_GAPS of $WATCH_SAMPLES samples: ${WATCH_MISSED% }"
    fi
}

name_of() { local n; for n in "${ALL_NODES[@]}"; do [ "$(peer_of "$n")" = "$1" ] && { echo "$n"; return; }; done; echo "${1: -6}"; }

# Hole-punch outcomes over the whole run, from the metrics and the nodes' logs.
holepunch_summary() {
    local n line out
    log "hole-punch summary (whole scenario; DCUtR reports one result per relayed connection after up to 3 attempts):"
    for n in a1 a2 b1 fw; do
        out="$n: metrics attempts=$(metric_at "$n" gossipdir_holepunch_attempts_total) successes=$(metric_at "$n" gossipdir_holepunch_successes_total);"
        while read -r line; do
            [ -n "$line" ] || continue
            out+=" $line"
        done < <(sed 's/\x1b\[[0-9;]*m//g' "$STATE/$n/node.log" |
            sed -n 's/.*hole punch \(succeeded\|failed\).* peer=\(12D3[A-Za-z0-9]*\).*/\1 \2/p' |
            sort | uniq -c | while read -r c what peer; do echo "$what:$(name_of "$peer")x$c"; done)
        log "    $out"
    done
    local relay_m
    relay_m=$(ns relay curl -s --max-time 2 http://127.0.0.1:5170/metrics | grep '^libp2p_relay_events_total' | sed 's/libp2p_relay_events_total//' | tr '\n' ' ')
    log "    relay server events: ${relay_m:-none}"
    log "    A-B links at the end (a b connected relayed): $(ab_links | tr '\n' ';')"
}

# With --delay: the delayer must have lived through the whole scenario.
delayer_report() {
    [ -f "$STATE/netdelay.pid" ] || return 0
    local last
    last=$(grep '^netdelay: received' "$STATE/netdelay.log" | tail -n 1)
    if alive "$(cat "$STATE/netdelay.pid")"; then
        verdict delayer 0 "netdelay alive; ${last#netdelay: }"
    else
        verdict delayer 1 "netdelay died: $(tail -n 3 "$STATE/netdelay.log" | tr '\n' ' ')"
    fi
}

run_checks() {
    local only="${1:-1,2,3,5,6,4}" c
    PASS=()
    FAIL=()
    LIVE=("${ALL_NODES[@]}")
    SLOW=$(slow_factor)
    [ "$SLOW" = 1 ] || log "deadlines x$SLOW ($(faults_desc))"
    for c in ${only//,/ }; do
        case $c in
            1) check1 "${ALL_NODES[@]}" ;;
            2) check2 ;;
            3) check3 ;;
            4) check4 ;;
            5) check5 ;;
            6) check6 ;;
            7) check7 ;;
            8) check8 ;;
            *) die "no check $c" ;;
        esac
    done
    holepunch_summary
    delayer_report
    log "checks passed: ${PASS[*]:-none}; failed: ${FAIL[*]:-none}"
    [ ${#FAIL[@]} = 0 ]
}

# ---- scenarios ----------------------------------------------------------------------------

# scenario NAME -> S_NAT S_LOSS S_DELAY S_CHECKS
scenario() {
    S_NAT=cone
    S_LOSS=""
    S_DELAY=""
    S_TTL=""
    case $1 in
        cone) S_CHECKS=1,2,3,5,6,7,4 ;;
        symmetric) S_NAT=symmetric S_CHECKS=1,2,3,5,4 ;;
        faults) S_CHECKS=1,2,3,5,6,7,8,4 ;;
        skew) S_CHECKS=1,7 ;;
        delay200) S_DELAY=200ms S_CHECKS=1,3,5,6,8 ;;
        loss20) S_LOSS=0.2 S_CHECKS=1,3,5,6,8 ;;
        # At 50 % loss a 10 s record must cross a link whose TCP backs off for seconds at a
        # time within 6.7 s of each refresh: run it with the TTL nodes really use.
        loss50) S_LOSS=0.5 S_TTL=60 S_CHECKS=1,3,5,6,8 ;;
        *) die "no scenario '$1' (cone symmetric faults skew delay200 loss20 loss50)" ;;
    esac
}

# run_scenarios "NAME..." -> runs each (up, checks, down); sets RESULTS; returns 1 if any failed.
run_scenarios() {
    local total=0 scen t0 rc
    RESULTS=()
    for scen in $1; do
        scenario "$scen"
        LOSS="${CLI_LOSS:-$S_LOSS}"
        DELAY="${CLI_DELAY:-$S_DELAY}"
        TTL_SECS="${GD_TTL_SECS:-${S_TTL:-$BASE_TTL_SECS}}"
        SCEN="$scen"
        t0=$(now_ms)
        log "===== scenario $scen: NAT B $S_NAT${LOSS:+, loss $LOSS}${DELAY:+, delay $DELAY ($DELAY_DIR)}${NETEM:+, netem $NETEM}; TTL ${TTL_SECS} s; checks ${ONLY:-$S_CHECKS}"
        rm -rf "$STATE"
        mkdir -p "$STATE"
        echo "$BIN" >"$STATE/bin"
        rc=0
        if net_up "$S_NAT" "$NETEM" && nodes_up; then
            run_checks "${ONLY:-$S_CHECKS}" || rc=1
        else
            rc=1
        fi
        RESULTS+=("$scen: passed ${PASS[*]:-none}, failed ${FAIL[*]:-none} ($(($(now_ms) - t0)) ms)")
        rm -rf "$STATE-$scen.last"
        cp -r "$STATE" "$STATE-$scen.last" 2>/dev/null
        down || rc=1
        [ $rc = 0 ] || total=1
    done
    return $total
}

# The fault matrix as a Markdown table, from the rows the checks wrote.
matrix_table() {
    echo "| scenario | fault | converged | time to converge | live records lost | measured |"
    echo "|---|---|---|---|---|---|"
    awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6 }' "$1"
}

# ---- main ---------------------------------------------------------------------------------

usage() { sed -n '2,/^# Topology/p' "$0" | sed '$d'; exit 2; }

cmd="${1:-}"
[ -n "$cmd" ] || usage
shift
NAT=cone
NETEM=""
LOSS=""
DELAY=""
DELAY_DIR=both
ONLY=""
CLI_LOSS=""
CLI_DELAY=""
while [ $# -gt 0 ]; do
    case $1 in
        --nat) NAT="$2"; shift 2 ;;
        --netem) NETEM="$2"; shift 2 ;;
        --loss) LOSS="$2" CLI_LOSS="$2"; shift 2 ;;
        --delay) DELAY="$2" CLI_DELAY="$2"; shift 2 ;;
        --delay-dir) DELAY_DIR="$2"; shift 2 ;;
        --only) ONLY="$2"; shift 2 ;;
        *) usage ;;
    esac
done
case $NAT in cone | symmetric) ;; *) die "--nat cone|symmetric" ;; esac
case $DELAY_DIR in both | out | in) ;; *) die "--delay-dir both|out|in" ;; esac

need_root
mkdir -p "$STATE"

case $cmd in
    up)
        ensure_tools
        find_bin
        [ -z "$DELAY" ] || find_netdelay
        # Someone else's testbed (or a left-over one) is not ours to tear down on failure.
        if ip netns list 2>/dev/null | grep -q '^gd-'; then
            die "gd-* namespaces exist already (a testbed is up, or left over: $0 down)"
        fi
        UP_DONE=0
        # Whatever stops `up` half way (a failed step, Ctrl-C) takes the testbed down again.
        trap 'log "interrupted: tearing down"; down; exit 130' INT TERM
        trap '[ "$UP_DONE" = 1 ] || { log "up failed: tearing down"; down; }' EXIT
        rm -f "$STATE/rows"
        net_up "$NAT" "$NETEM" || exit 1
        nodes_up || exit 1
        echo "$BIN" >"$STATE/bin"
        printf 'LOSS=%q DELAY=%q NETEM=%q\n' "$LOSS" "$DELAY" "$NETEM" >"$STATE/faults"
        UP_DONE=1
        log "up; run: $0 check; then: $0 down (state and logs in $STATE)"
        ;;
    check)
        BIN="$(cat "$STATE/bin" 2>/dev/null)" || die "not up"
        # shellcheck disable=SC1091
        [ -f "$STATE/faults" ] && . "$STATE/faults"
        ROWS="$STATE/rows"
        run_checks "$ONLY"
        ;;
    down)
        down && log "down: no gd- namespace left"
        ;;
    ci | matrix)
        ensure_tools
        find_bin
        scenarios="${GD_SCENARIOS:-cone symmetric delay200}"
        [ "$cmd" = ci ] || scenarios="${GD_MATRIX:-faults delay200 loss20 loss50}"
        case " $scenarios ${CLI_DELAY:+delay} " in *delay*) find_netdelay ;; esac
        trap 'log "interrupted: tearing down"; down; exit 130' INT TERM
        trap 'down >/dev/null 2>&1' EXIT
        down >/dev/null 2>&1
        ROWS="$STATE-$cmd-rows.tsv"
        : >"$ROWS"
        total=0
        wall0=$(now_ms)
        run_scenarios "$scenarios" || total=1
        log "===== summary ($(($(now_ms) - wall0)) ms, binary $BIN)"
        for r in "${RESULTS[@]}"; do log "$r"; done
        if [ "$cmd" = matrix ]; then
            matrix_table "$ROWS" >"$STATE-matrix.md"
            log "fault matrix (also in $STATE-matrix.md):"
            cat "$STATE-matrix.md"
        fi
        exit $total
        ;;
    *) usage ;;
esac
