//! Prometheus metrics: libp2p's (bandwidth, swarm, kad, identify, ping, relay, dcutr) and
//! gossipdir's own, all in one registry.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use directory::Rejection;
use gossip::Engine;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::codec::ByteCounters;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    pub direction: String,
}

/// gossipdir's own metrics. Counters mirror the engine's and the store's, advanced by deltas.
pub struct Metrics {
    pub libp2p: libp2p::metrics::Metrics,
    records: Gauge,
    nodes: Gauge,
    connections_direct: Gauge,
    connections_relayed: Gauge,
    clock_offset: Gauge,
    rounds: Counter,
    merges: Counter,
    expiries: Counter,
    conflicts: Counter,
    exchanges_started: Counter,
    exchanges_completed: Counter,
    exchanges_failed: Counter,
    pushes: Counter,
    exchange_bytes: Family<DirectionLabel, Counter>,
    rejected: Family<ReasonLabel, Counter>,
    pub misbehaviour: Counter,
    pub stalled_connections: Counter,
    pub holepunch_attempts: Counter,
    pub holepunch_successes: Counter,
    pub relay_reservations: Counter,
    /// The sync protocol's byte counters (request-response codec and links).
    pub(crate) bytes: Arc<ByteCounters>,
    last: Last,
}

#[derive(Default)]
struct Last {
    rounds: u64,
    merges: u64,
    expiries: u64,
    conflicts: u64,
    started: u64,
    completed: u64,
    failed: u64,
    pushes: u64,
    bytes_in: u64,
    bytes_out: u64,
    rejected: BTreeMap<Rejection, u64>,
}

fn advance(counter: &Counter, last: &mut u64, now: u64) {
    if now > *last {
        counter.inc_by(now - *last);
        *last = now;
    }
}

impl Metrics {
    pub fn new(registry: &mut Registry, bytes: Arc<ByteCounters>) -> Self {
        let libp2p = libp2p::metrics::Metrics::new(registry);
        let r = registry.sub_registry_with_prefix("gossipdir");
        let m = Metrics {
            libp2p,
            records: Gauge::default(),
            nodes: Gauge::default(),
            connections_direct: Gauge::default(),
            connections_relayed: Gauge::default(),
            clock_offset: Gauge::default(),
            rounds: Counter::default(),
            merges: Counter::default(),
            expiries: Counter::default(),
            conflicts: Counter::default(),
            exchanges_started: Counter::default(),
            exchanges_completed: Counter::default(),
            exchanges_failed: Counter::default(),
            pushes: Counter::default(),
            exchange_bytes: Family::default(),
            rejected: Family::default(),
            misbehaviour: Counter::default(),
            stalled_connections: Counter::default(),
            holepunch_attempts: Counter::default(),
            holepunch_successes: Counter::default(),
            relay_reservations: Counter::default(),
            bytes,
            last: Last::default(),
        };
        r.register(
            "records",
            "Live records held (withdrawals excluded)",
            m.records.clone(),
        );
        r.register("nodes", "Live node records held", m.nodes.clone());
        r.register(
            "connections_direct",
            "Open direct connections",
            m.connections_direct.clone(),
        );
        r.register(
            "connections_relayed",
            "Open relayed connections",
            m.connections_relayed.clone(),
        );
        r.register(
            "clock_offset_ms",
            "Correction applied to the local clock for records (median offset of sampled peers)",
            m.clock_offset.clone(),
        );
        r.register("rounds", "Gossip rounds run", m.rounds.clone());
        r.register("merges", "Records merged into the store", m.merges.clone());
        r.register(
            "expiries",
            "Records dropped because they expired",
            m.expiries.clone(),
        );
        r.register(
            "conflicts",
            "Same key and seq with different bytes",
            m.conflicts.clone(),
        );
        r.register(
            "exchanges_started",
            "Sync exchanges started",
            m.exchanges_started.clone(),
        );
        r.register(
            "exchanges_completed",
            "Sync exchanges completed",
            m.exchanges_completed.clone(),
        );
        r.register(
            "exchanges_failed",
            "Exchanges failed or timed out",
            m.exchanges_failed.clone(),
        );
        r.register("pushes", "Rumor pushes sent", m.pushes.clone());
        r.register(
            "exchange_bytes",
            "Bytes of sync messages, by direction",
            m.exchange_bytes.clone(),
        );
        r.register(
            "rejected_records",
            "Records rejected, by reason",
            m.rejected.clone(),
        );
        r.register(
            "misbehaviour",
            "Protocol violations by peers",
            m.misbehaviour.clone(),
        );
        r.register(
            "stalled_connections",
            "Connections closed because requests or pings on them kept timing out",
            m.stalled_connections.clone(),
        );
        r.register(
            "holepunch_attempts",
            "DCUtR hole-punch attempts finished",
            m.holepunch_attempts.clone(),
        );
        r.register(
            "holepunch_successes",
            "DCUtR hole punches that succeeded",
            m.holepunch_successes.clone(),
        );
        r.register(
            "relay_reservations",
            "Relay reservations accepted",
            m.relay_reservations.clone(),
        );
        for reason in Rejection::ALL {
            m.rejected
                .get_or_create(&ReasonLabel {
                    reason: reason.as_str().to_owned(),
                })
                .inc_by(0);
        }
        for direction in ["in", "out"] {
            m.exchange_bytes
                .get_or_create(&DirectionLabel {
                    direction: direction.to_owned(),
                })
                .inc_by(0);
        }
        m
    }

    /// Sync-protocol bytes received and sent so far.
    pub fn gossip_bytes(&self) -> crate::client::GossipBytes {
        crate::client::GossipBytes {
            received: self.bytes.inbound.load(Ordering::Relaxed),
            sent: self.bytes.outbound.load(Ordering::Relaxed),
        }
    }

    /// Brings the mirrored counters and gauges up to date.
    pub fn update(&mut self, engine: &Engine, live_records: usize, direct: usize, relayed: usize) {
        let store = engine.store();
        let s = store.stats();
        let e = engine.stats();
        self.records.set(live_records as i64);
        self.nodes.set(store.nodes().len() as i64);
        self.connections_direct.set(direct as i64);
        self.connections_relayed.set(relayed as i64);
        self.clock_offset.set(engine.clock().offset_ms());
        let last = &mut self.last;
        advance(&self.rounds, &mut last.rounds, e.rounds);
        advance(&self.merges, &mut last.merges, s.merged);
        advance(&self.expiries, &mut last.expiries, s.expired);
        advance(&self.conflicts, &mut last.conflicts, s.conflicts);
        advance(
            &self.exchanges_started,
            &mut last.started,
            e.exchanges_started,
        );
        advance(
            &self.exchanges_completed,
            &mut last.completed,
            e.exchanges_completed,
        );
        advance(&self.exchanges_failed, &mut last.failed, e.exchanges_failed);
        advance(&self.pushes, &mut last.pushes, e.pushes_sent);
        let bytes_in = self.bytes.inbound.load(Ordering::Relaxed);
        let bytes_out = self.bytes.outbound.load(Ordering::Relaxed);
        let label = |d: &str| DirectionLabel {
            direction: d.to_owned(),
        };
        advance(
            &self.exchange_bytes.get_or_create(&label("in")),
            &mut last.bytes_in,
            bytes_in,
        );
        advance(
            &self.exchange_bytes.get_or_create(&label("out")),
            &mut last.bytes_out,
            bytes_out,
        );
        for (reason, count) in &s.rejected {
            let seen = last.rejected.entry(*reason).or_default();
            let counter = self.rejected.get_or_create(&ReasonLabel {
                reason: reason.as_str().to_owned(),
            });
            advance(&counter, seen, *count);
        }
    }
}

/// The registry in Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}
