#!/usr/bin/env bash
# gossipdir across NAT: an asymmetric-reachability testbed of network namespaces.
#
#   sudo tests/nat/testbed.sh up    [--nat cone|symmetric] [--netem "delay 30ms loss 2%"] [--loss 0.05]
#   sudo tests/nat/testbed.sh check [--only 1,2,3,5,4]
#   sudo tests/nat/testbed.sh down
#   sudo tests/nat/testbed.sh ci    # cone scenario then symmetric scenario: up, check, down
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
# firewall of gd-fw accepts only established/related traffic.
#
# Requires root, iproute2, iptables, jq and curl (installed with apt-get when missing), and a
# gossipdir binary: $GOSSIPDIR_BIN, else target/x86_64-unknown-linux-gnu/release/gossipdir,
# else target/release/gossipdir (built with cargo when none exists).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE="${GD_STATE:-/tmp/gd-nat}"
INTERVAL="${GD_INTERVAL:-500ms}"
TTL_SECS="${GD_TTL_SECS:-10}"
ROUND_MS=500
CAP="nat-test"
PUBLIC_NODES=(relay pub fw)
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

need_root() { [ "$(id -u)" = 0 ] || die "run as root (network namespaces)"; }

ensure_tools() {
    local missing=()
    command -v ip >/dev/null || missing+=(iproute2)
    command -v iptables >/dev/null || missing+=(iptables)
    command -v tc >/dev/null || missing+=(iproute2)
    command -v jq >/dev/null || missing+=(jq)
    command -v curl >/dev/null || missing+=(curl)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >/dev/null ||
            die "cannot install ${missing[*]}"
    fi
}

find_bin() {
    if [ -n "${GOSSIPDIR_BIN:-}" ]; then
        BIN="$GOSSIPDIR_BIN"
    elif [ -x "$ROOT/target/x86_64-unknown-linux-gnu/release/gossipdir" ]; then
        BIN="$ROOT/target/x86_64-unknown-linux-gnu/release/gossipdir"
    elif [ -x "$ROOT/target/release/gossipdir" ]; then
        BIN="$ROOT/target/release/gossipdir"
    else
        log "building gossipdir (release)"
        (cd "$ROOT" && cargo build --release --locked --bin gossipdir) || die "build failed"
        BIN="$ROOT/target/release/gossipdir"
    fi
    [ -x "$BIN" ] || die "no gossipdir binary at $BIN"
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
    local r lan net
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
    echo "$nat" >"$STATE/nat"
    echo "$netem" >"$STATE/netem"
    log "network up: NAT B = $nat"
}

# ---- nodes --------------------------------------------------------------------------------

api() { ns "$1" "$BIN" "${@:2}"; }
peer_of() { cat "$STATE/$1/peer"; }
relay_addr() { echo "/ip4/${IP[relay]}/tcp/4101/p2p/$(peer_of relay)"; }

start_node() { # start_node NAME ARGS...
    local n="$1"
    shift
    mkdir -p "$STATE/$n"
    [ -f "$STATE/$n/key" ] || "$BIN" keygen --out "$STATE/$n/key" >"$STATE/$n/peer"
    # A simple command, not the ns function: $! is then the node's own pid (exec chain).
    ip netns exec "gd-$n" env RUST_LOG="${GD_RUST_LOG:-info,libp2p_dcutr=debug,libp2p_relay=debug}" \
        "$BIN" node --key "$STATE/$n/key" --data-dir "$STATE/$n" \
        --interval "$INTERVAL" --ttl "${TTL_SECS}s" "$@" \
        >>"$STATE/$n/node.log" 2>&1 &
    echo $! >"$STATE/$n/pid"
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
    for n in "${ALL_NODES[@]}"; do
        pid="$(cat "$STATE/$n/pid" 2>/dev/null)" || continue
        kill -KILL "$pid" 2>/dev/null
    done
    local pids=""
    for n in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^gd-'); do
        pids+=" $(ip netns pids "$n" 2>/dev/null | tr '\n' ' ')"
    done
    for pid in $pids; do kill -KILL "$pid" 2>/dev/null; done
    local i
    for i in $(seq 50); do
        local alive=0
        for pid in $pids; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for n in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^gd-'); do
        ip netns del "$n" 2>/dev/null
    done
    rm -f "$STATE"/*/pid
    if ip netns list 2>/dev/null | grep -q '^gd-'; then
        log "WARNING: namespaces left: $(ip netns list | grep '^gd-' | tr '\n' ' ')"
        return 1
    fi
    return 0
}

# ---- measurements -------------------------------------------------------------------------

# Names of live nat-test specialists a node holds, sorted, one line.
names_at() { api "$1" query --capability "$CAP" --json 2>/dev/null | jq -r '[.[].name] | sort | join(",")'; }
round_at() { api "$1" status --json 2>/dev/null | jq -r '.round'; }
metric_at() { # metric_at NODE NAME -> value (0 when absent)
    ns "$1" curl -s --max-time 2 http://127.0.0.1:5170/metrics |
        awk -v m="$2" '$1 == m || index($1, m"{") == 1 { s += $2 } END { print s + 0 }'
}

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

show_names() { for n in $1; do log "    $n holds: $(names_at "$n")"; done; }

join_sorted() { tr ' ' '\n' | grep -v '^$' | sort | paste -sd, -; }

PASS=()
FAIL=()
verdict() { # verdict CHECK OK MESSAGE
    if [ "$2" = 0 ]; then PASS+=("$1"); log "PASS $1: $3"; else FAIL+=("$1"); log "FAIL $1: $3"; fi
}

check1() {
    log "check 1: every node announces one specialist; every node converges to all of them"
    local live="$*" expected r0 n
    declare -A r0s
    for n in $live; do r0s[$n]=$(round_at "$n"); done
    for n in $live; do
        api "$n" announce --name "spec-$n" --capability "$CAP" --endpoint "https://$n.example/v1" >/dev/null ||
            { verdict 1 1 "announce on $n failed"; return; }
    done
    expected=$(for n in $live; do echo "spec-$n"; done | join_sorted)
    if wait_names "$live" "$expected" 30000; then
        local rounds="" maxr=0 d
        for n in $live; do
            d=$(($(round_at "$n") - r0s[$n]))
            rounds+="$n:$d "
            [ $d -gt $maxr ] && maxr=$d
        done
        verdict 1 0 "all ${#r0s[@]} nodes hold all ${#r0s[@]} specialists after ${WAITED_MS} ms; rounds run meanwhile (status.round delta): $rounds(max $maxr)"
    else
        show_names "$live"
        verdict 1 1 "not converged within 30 s"
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
    deadline=$((start + 45000))
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
            verdict 2 1 "no direct A-B connection within 45 s; $hp"
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
    local live="${ALL_NODES[*]}" expected
    # SIGKILL
    kill -KILL "$(cat "$STATE/b2/pid")"
    live=$(others_than b2 "$live")
    expected=$(for n in $live; do echo "spec-$n"; done | join_sorted)
    local bound=$((TTL_SECS * 1000 + 6 * ROUND_MS))
    if wait_names "$live" "$expected" $((bound + 10000)); then
        local ok=0
        [ "$WAITED_MS" -le "$bound" ] || ok=1
        verdict 4a $ok "SIGKILLed b2 gone from all ${live// /,}after ${WAITED_MS} ms (bound TTL ${TTL_SECS}s + 6 rounds = ${bound} ms)"
    else
        show_names "$live"
        verdict 4a 1 "SIGKILLed b2 still held after $((bound + 10000)) ms"
    fi
    # SIGTERM
    kill -TERM "$(cat "$STATE/pub/pid")"
    live=$(others_than pub "$live")
    expected=$(for n in $live; do echo "spec-$n"; done | join_sorted)
    bound=$((8 * ROUND_MS))
    if wait_names "$live" "$expected" $((bound + 15000)); then
        local ok=0
        [ "$WAITED_MS" -le "$bound" ] || ok=1
        verdict 4b $ok "SIGTERMed pub gone from all after ${WAITED_MS} ms (bound 8 rounds = ${bound} ms)"
    else
        show_names "$live"
        verdict 4b 1 "SIGTERMed pub still held after $((bound + 15000)) ms"
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
    local start deadline ok=1 n
    deadline=$((healed + 30000))
    while [ "$(now_ms)" -lt "$deadline" ]; do
        ok=0
        for n in $inside $outside; do
            case ",$(names_at "$n")," in *,part-a1,*part-b1,* | *,part-b1,*part-a1,*) ;; *) ok=1; break ;; esac
        done
        [ $ok = 0 ] && break
        sleep 0.2
    done
    local waited=$(($(now_ms) - healed)) all_ok=1
    if [ $ok = 0 ]; then
        expected=$(for n in "${ALL_NODES[@]}"; do echo "spec-$n"; done; echo part-a1; echo part-b1)
        expected=$(echo "$expected" | join_sorted)
        wait_names "$inside $outside" "$expected" 30000 && all_ok=0
    fi
    local msg="leak during partition: $leak, each side saw its own: $((1 - sides_ok)), union part-a1+part-b1 everywhere $waited ms after heal (~$((waited / ROUND_MS)) rounds), full directory (7 specialists + 2) everywhere $((waited + WAITED_MS)) ms after heal"
    if [ $leak = 0 ] && [ $sides_ok = 0 ] && [ $ok = 0 ] && [ $all_ok = 0 ]; then
        verdict 5 0 "$msg"
    else
        show_names "$inside $outside"
        verdict 5 1 "$msg"
    fi
    # Leave the directory as check 4 expects it.
    api a1 withdraw --name part-a1 >/dev/null
    api b1 withdraw --name part-b1 >/dev/null
    expected=$(for n in "${ALL_NODES[@]}"; do echo "spec-$n"; done | join_sorted)
    wait_names "$inside $outside" "$expected" 15000 || log "    (withdrawals of part-* not everywhere after 15 s)"
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

run_checks() {
    local only="${1:-1,2,3,5,4}" c
    PASS=()
    FAIL=()
    for c in ${only//,/ }; do
        case $c in
            1) check1 "${ALL_NODES[@]}" ;;
            2) check2 ;;
            3) check3 ;;
            4) check4 ;;
            5) check5 ;;
            *) die "no check $c" ;;
        esac
    done
    holepunch_summary
    log "checks passed: ${PASS[*]:-none}; failed: ${FAIL[*]:-none}"
    [ ${#FAIL[@]} = 0 ]
}

# ---- main ---------------------------------------------------------------------------------

usage() { sed -n '2,9p' "$0"; exit 2; }

cmd="${1:-}"
[ -n "$cmd" ] || usage
shift
NAT=cone
NETEM=""
LOSS=""
ONLY=""
while [ $# -gt 0 ]; do
    case $1 in
        --nat) NAT="$2"; shift 2 ;;
        --netem) NETEM="$2"; shift 2 ;;
        --loss) LOSS="$2"; shift 2 ;;
        --only) ONLY="$2"; shift 2 ;;
        *) usage ;;
    esac
done
case $NAT in cone | symmetric) ;; *) die "--nat cone|symmetric" ;; esac

need_root
mkdir -p "$STATE"

case $cmd in
    up)
        ensure_tools
        find_bin
        trap 'log "interrupted: tearing down"; down; exit 130' INT TERM
        net_up "$NAT" "$NETEM" || { down; exit 1; }
        nodes_up || { down; exit 1; }
        echo "$BIN" >"$STATE/bin"
        log "up; run: $0 check; then: $0 down (state and logs in $STATE)"
        ;;
    check)
        BIN="$(cat "$STATE/bin" 2>/dev/null)" || die "not up"
        run_checks "$ONLY"
        ;;
    down)
        down && log "down: no gd- namespace left"
        ;;
    ci)
        ensure_tools
        find_bin
        trap 'log "interrupted: tearing down"; down; exit 130' INT TERM
        trap 'down >/dev/null 2>&1' EXIT
        down >/dev/null 2>&1
        total=0
        results=()
        for scenario in ${GD_SCENARIOS:-cone symmetric}; do
            t0=$(now_ms)
            log "===== scenario: NAT B $scenario ${NETEM:+(netem $NETEM)} ${LOSS:+(loss $LOSS)}"
            rm -rf "$STATE"
            mkdir -p "$STATE"
            echo "$BIN" >"$STATE/bin"
            rc=0
            if net_up "$scenario" "$NETEM" && nodes_up; then
                run_checks "$ONLY" || rc=1
            else
                rc=1
            fi
            results+=("$scenario: passed ${PASS[*]:-none}, failed ${FAIL[*]:-none} ($(($(now_ms) - t0)) ms)")
            rm -rf "$STATE-$scenario.last"; cp -r "$STATE" "$STATE-$scenario.last" 2>/dev/null
            down || rc=1
            [ $rc = 0 ] || total=1
        done
        log "===== summary"
        for r in "${results[@]}"; do log "$r"; done
        exit $total
        ;;
    *) usage ;;
esac
