//! A node whose clock is off by ±60 s, among honest nodes, with 60 s TTLs refreshed every
//! 20 s (the node's defaults): with the network-adjusted clock it neither loses live records
//! (its own stay live everywhere, it keeps everyone else's) nor makes its records outlive
//! their TTL by more than the skew allowance; nobody is penalised. Without the correction, the
//! same run loses records — the control that shows what the defence is for.

use directory::sample::keypair;
use directory::{Issuer, Limits, Specialist};
use gossipdir_gossip::pair::exchange_at;
use gossipdir_gossip::{ClockConfig, Config, Engine, Input};

const T0: u64 = 1_800_000_000_000;
const TTL: u64 = 60_000;
const ROUND: u64 = 1_000;
const NODES: usize = 6;
/// The skewed node.
const S: usize = NODES - 1;

struct Node {
    engine: Engine,
    issuer: Issuer,
    /// Local clock minus true time.
    skew: i64,
    refresh_at: u64,
    issued_at_offset: i64,
}

impl Node {
    fn local(&self, t: u64) -> u64 {
        t.saturating_add_signed(self.skew)
    }

    /// What the node does each round: re-issue its specialist every TTL/3, or at once when
    /// its clock correction moved by more than a second (as the node's event loop does).
    fn refresh(&mut self, i: usize, t: u64) {
        let local = self.local(t);
        let offset = self.engine.clock().offset_ms();
        let now = self.engine.network_time(local);
        if now < self.refresh_at && offset.abs_diff(self.issued_at_offset) <= 1_000 {
            return;
        }
        self.issued_at_offset = offset;
        self.refresh_at = now + TTL / 3;
        let spec = Specialist {
            capabilities: vec!["skew-test".to_owned()],
            endpoint: None,
            meta: Vec::new(),
            node_lease: false,
        };
        let record = self
            .issuer
            .specialist(&format!("spec-{i}"), spec, TTL, now)
            .unwrap();
        self.engine.handle(Input::Publish(record), local);
    }
}

struct Outcome {
    /// (node, specialist) pairs missing at the end, in the holder's own view.
    missing: Vec<(usize, usize)>,
    /// Latest true time any honest node would keep S's record after S stopped refreshing.
    max_lifetime_past_refresh: u64,
    penalised: usize,
    skewed_offset: i64,
}

fn run(skew: i64, clock: ClockConfig) -> Outcome {
    let config = Config {
        push_fanout: 0,
        clock,
        limits: Limits::default(),
        ..Config::default()
    };
    let mut nodes: Vec<Node> = (0..NODES)
        .map(|i| {
            let kp = keypair(7_000 + i as u64);
            Node {
                engine: Engine::new(kp.public().to_peer_id(), config.clone(), i as u64),
                issuer: Issuer::new(kp, Limits::default()),
                skew: if i == S { skew } else { 0 },
                refresh_at: 0,
                issued_at_offset: 0,
            }
        })
        .collect();
    let mut penalised = 0;
    let rounds = 180;
    for r in 0..rounds {
        let t = T0 + r * ROUND;
        for (i, n) in nodes.iter_mut().enumerate() {
            n.refresh(i, t);
            let local = n.local(t);
            for out in n.engine.handle(Input::Tick, local) {
                if matches!(out, gossipdir_gossip::Output::Misbehaved { .. }) {
                    penalised += 1;
                }
            }
        }
        // Every node starts exchanges with two others (deterministic rotation).
        for i in 0..NODES {
            for k in [1, 2 + (r as usize % (NODES - 2))] {
                let j = (i + k) % NODES;
                let (lo, hi) = (i.min(j), i.max(j));
                let (left, right) = nodes.split_at_mut(hi);
                let (a, b) = if i < j {
                    (&mut left[lo], &mut right[0])
                } else {
                    (&mut right[0], &mut left[lo])
                };
                let (ta, tb) = (a.local(t), b.local(t));
                exchange_at(&mut a.engine, ta, &mut b.engine, tb).unwrap();
            }
        }
    }
    let t_end = T0 + rounds * ROUND;
    let mut missing = Vec::new();
    for (h, n) in nodes.iter().enumerate() {
        let now = n.engine.store_time(n.local(t_end));
        let held = n.engine.store().query(&["skew-test".to_owned()], now);
        for s in 0..NODES {
            let name = format!("spec-{s}");
            if !held.iter().any(|r| r.name() == name) {
                missing.push((h, s));
            }
        }
    }
    // S's record as honest nodes hold it: how long past S's last refresh it would live.
    let s_owner = nodes[S].engine.local_peer();
    let max_lifetime_past_refresh = nodes[..S]
        .iter()
        .filter_map(|n| {
            n.engine
                .store()
                .iter()
                .find(|r| *r.owner() == s_owner)
                .map(|r| r.expires_at().saturating_sub(t_end))
        })
        .max()
        .unwrap_or(0);
    Outcome {
        missing,
        max_lifetime_past_refresh,
        penalised,
        skewed_offset: nodes[S].engine.clock().offset_ms(),
    }
}

fn assert_defended(skew: i64) {
    let o = run(skew, ClockConfig::default());
    assert!(
        o.missing.is_empty(),
        "skew {skew} ms: live records missing (holder, owner): {:?}",
        o.missing
    );
    assert!(
        (o.skewed_offset + skew).abs() <= 1,
        "skew {skew} ms: the skewed node estimated {} ms",
        o.skewed_offset
    );
    // Refreshed at most TTL/3 ago: it lives at most a TTL (plus a round) from now.
    assert!(
        o.max_lifetime_past_refresh <= TTL + ROUND,
        "skew {skew} ms: the skewed node's record outlives its TTL: {} ms",
        o.max_lifetime_past_refresh
    );
    assert_eq!(o.penalised, 0, "honest peers were penalised");
}

#[test]
fn a_node_sixty_seconds_behind_loses_nothing_and_nobody_keeps_its_records_too_long() {
    assert_defended(-60_000);
}

#[test]
fn a_node_sixty_seconds_ahead_loses_nothing_and_nobody_keeps_its_records_too_long() {
    assert_defended(60_000);
}

#[test]
fn without_the_correction_the_same_skew_loses_live_records() {
    let off = ClockConfig {
        min_peers: usize::MAX,
        ..ClockConfig::default()
    };
    for skew in [-60_000, 60_000] {
        let o = run(skew, off.clone());
        assert!(
            !o.missing.is_empty(),
            "skew {skew}: expected losses without correction"
        );
    }
}
