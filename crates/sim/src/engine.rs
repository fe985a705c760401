//! The engine model: `N` real [`gossip::Engine`]s exchanging real signed records through the
//! real wire codec, in memory, as a discrete-event simulation.
//!
//! # Time
//!
//! Simulated time `t` starts at 0 (the engines see `now = T0 + t`, a fixed unix instant).
//! Every message (request or response) takes [`EngineModel::latency_ms`] one way, so news
//! pushed on at once (`push_fanout > 0`) travels hop by hop inside a round. Events sit in a
//! priority queue ordered by `(time, sequence number)`, so a trial is a pure function of
//! `(params, model, seed)`; every random draw comes from one `ChaCha8Rng` seeded with the
//! trial's seed (trial `t` uses seed `seed + t`), engines are seeded from it.
//!
//! * **Round 0** (`t = 0`): the origin(s) `Publish` their announcement(s); with
//!   `push_fanout > 0` the engines push them on at once.
//! * **Round boundary `r ≥ 1`** (`t = r × interval`): churn (if any), then every present node,
//!   in a seeded random order, `Tick`s (starts `fanout` exchanges) — or, for an adversary,
//!   pushes its forgeries.
//!
//! # Convergence
//!
//! The state is checked after every event. The trial converges at the first instant
//! `t_conv` at which every present honest node holds every required record (each honest
//! announcement, and with `updates ≥ 2` the winning version of the conflicting pair). Then
//! `time_ms = t_conv` (announcements are made at `t = 0`) and `rounds = ⌊t_conv / interval⌋`,
//! the number of round boundaries (ticks) that had happened: a record reached mid-round `r`
//! (during the exchanges started by the `r`-th tick) converges in round `r`; a record that
//! spreads everywhere by pushes alone before the first tick converges in round 0, and
//! `N = 1` converges in round 0 at `t = 0`. Pure push-pull (`push_fanout = 0`) thus
//! counts rounds like the rumor model. `rounds = None` when `rounds` would exceed
//! `max_rounds`.
//!
//! # Membership and conditions
//!
//! At start every node gets `PeerDiscovered` for every other node (adversaries included); no
//! node records are published. Slots `0..U` are the origins (never churned, never
//! unreachable, never adversarial).
//!
//! * `loss P`: each exchange is lost with probability `P`, as in the rumor model: the request
//!   that opens it (`Summary`, or `Push`) never arrives and the requester gets `Failed` after
//!   [`EngineModel::timeout_ms`] (a transport timeout).
//! * [`EngineModel::message_loss`] (`--message-loss P`): a harsher fault, each message (every
//!   request and response of a multi-message exchange) is lost with probability `P`, with the
//!   same timeout. A lost response was still processed by the responder.
//! * `unreachable F`: `round(F × honest non-origin nodes)` nodes accept no inbound request
//!   (the requester gets `Failed` after one latency, a dial failure) but start their own.
//! * `churn C`: at each boundary `r ≥ 1`, `round(C × honest non-origin nodes)` of them leave
//!   and as many fresh, empty nodes with new identities join (inheriting the slot's
//!   reachability). A joiner gets `PeerDiscovered` for [`EngineModel::join_peers`] random
//!   present nodes and they for it. Requests that reach a departed node fail at once and the
//!   requester is told `PeerGone`.
//! * `updates U`: `U` origins announce distinct records; with `U ≥ 2` a further key gets two
//!   conflicting versions (same owner, same seq, different content) published at origins
//!   0 and 1; convergence also requires the winner (larger id) everywhere.
//! * `adversaries F`: `round(F × N)` non-origin nodes are adversarial actors, not engines.
//!   They answer every `Summary` with `InSync` and a time an hour behind (clock liars: a
//!   victim whose samples they dominate corrects its clock by the clamp, ±2 min, at most),
//!   a `Reconcile` with an empty answer, and a
//!   `Push` with `PushAck(0)` or (half the time) not at all. Every round each pushes to
//!   `fanout` random honest nodes: forgeries of announcements it has seen (the honest body
//!   signed by a forger's key; a newer seq so signed; a tampered body with the owner's
//!   signature; a far-future expiry so signed), a record of its own with a far-future expiry
//!   (validly signed) and replays of older, genuine versions of the announced keys. After
//!   every round every honest store is checked: a record whose id or signature is not one
//!   an honest owner made counts as a forged record accepted (must stay 0).
//!
//! # Measures (per trial, in [`TrialResult::extra`])
//!
//! Until convergence: bytes sent and received per honest node per round (encoded lengths;
//! the denominator is the sum over ticks `1..=rounds` of the present honest nodes, at least
//! one round), messages sent per node per round, the hop count at which each node first
//! held each announcement (a node merging it from a message sent by `X` gets `hop[X] + 1`,
//! origins 0; max and mean over present honest non-origins), redundancy (copies of an
//! announcement delivered per honest non-origin node), `Misbehaved` outputs by reason,
//! conflicts seen by the stores. With [`EngineModel::measure_removal`], at `t_conv` origin 0
//! publishes a withdrawal of its announcement and a record with a short TTL
//! ([`EngineModel::expiry_ttl_ms`]); the trial goes on until every present honest node holds
//! the withdrawal (checked after every event) and no present honest node holds the short-TTL
//! record (checked after each boundary's ticks, when engines expire records), each reported
//! in ms and in boundaries since the publication.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use directory::record::SIGNING_DOMAIN;
use directory::sample::{keypair, specialist};
use directory::{Issued, Issuer, Keypair, Limits, PeerId, RawRecord, Record, RecordId};
use gossip::wire::{self, Request, Response};
use gossip::{Config, Engine, Input, Output};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::{Mode, Model, ParamError, SimParams, TrialResult};

/// The unix instant simulated time 0 maps to.
pub const T0: u64 = 1_700_000_000_000;

/// Hop value of a node that does not hold a record.
const NONE: u16 = u16::MAX;

/// Key-number bases, so node, conflict and forger keys never collide.
/// Node `i` (in creation order) has key `sample::keypair(NODE_KEYS + i)`; origin `o` announces
/// `svc-{o}` under its own key.
pub const NODE_KEYS: u64 = 1 << 40;
/// Owner of the conflicting pair (`"contested"`, seq 1, capabilities `translate` for one
/// version and `summarize` for the other, issued at [`T0`] for [`HOUR_MS`]).
pub const CONFLICT_KEY: u64 = 1 << 41;
const FORGER_KEY: u64 = 1 << 42;
/// First key index of the flooding adversaries' Sybil keys.
const FLOOD_KEYS: u64 = 1 << 43;
/// Records each flooding adversary pushes per round, each under a new key.
const FLOOD_PER_ROUND: u64 = 64;

/// Lifetime of the announcements.
pub const HOUR_MS: u64 = 3_600_000;

/// The engine model (see the [module documentation](self)).
#[derive(Debug, Clone, PartialEq)]
pub struct EngineModel {
    /// Peers news is pushed to at once (`Config::push_fanout`; 0 = pure periodic push-pull).
    pub push_fanout: usize,
    /// Further peers a push acknowledged as news goes on to (`Config::push_feedback_forwards`).
    pub push_feedback: u32,
    /// Further peers that get only the ids of news and fetch what they lack
    /// (`Config::announce_fanout`).
    pub announce_fanout: Option<usize>,
    /// One-way latency of every message, simulated ms.
    pub latency_ms: u64,
    /// Round length, simulated ms.
    pub interval_ms: u64,
    /// After a lost message, the requester gets `Failed` this long after the loss.
    pub timeout_ms: u64,
    /// Probability that any one message is lost (on top of the per-exchange `loss`).
    pub message_loss: f64,
    /// After convergence, measure how long a withdrawal and an expiry take to clear.
    pub measure_removal: bool,
    /// TTL of the short-lived record of the removal measure.
    pub expiry_ttl_ms: u64,
    /// Peers a joining node is introduced to (and that learn of it).
    pub join_peers: usize,
    /// What the adversarial nodes do (`--adversary-kind`; all of it by default).
    pub adversary_kind: AdversaryKind,
    /// Members each node gossips with (`Config::view_size`; 0 = every member).
    pub view_size: usize,
}

/// One kind of adversarial behaviour, or all of them at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdversaryKind {
    /// Every behaviour below at once.
    #[default]
    All,
    /// Forged and tampered versions of the announcements it has seen (another key's
    /// signature, a newer seq so signed, a tampered body, a far-future expiry so signed).
    Forge,
    /// Older genuine versions of the announced keys.
    Replay,
    /// A validly signed record of its own with an expiry ten years ahead.
    Immortal,
    /// Sybil flood: 64 new, validly signed records under fresh keys every round.
    Flood,
    /// Answers every exchange as if it held everything and pushes nothing.
    Withhold,
    /// Withholds, and tells every peer that starts an exchange a time an hour behind.
    ClockLie,
}

impl AdversaryKind {
    pub const ALL: [AdversaryKind; 7] = [
        AdversaryKind::All,
        AdversaryKind::Forge,
        AdversaryKind::Replay,
        AdversaryKind::Immortal,
        AdversaryKind::Flood,
        AdversaryKind::Withhold,
        AdversaryKind::ClockLie,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            AdversaryKind::All => "all",
            AdversaryKind::Forge => "forge",
            AdversaryKind::Replay => "replay",
            AdversaryKind::Immortal => "immortal",
            AdversaryKind::Flood => "flood",
            AdversaryKind::Withhold => "withhold",
            AdversaryKind::ClockLie => "clock-lie",
        }
    }

    fn does(&self, kind: AdversaryKind) -> bool {
        *self == AdversaryKind::All || *self == kind
    }
}

impl std::str::FromStr for AdversaryKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AdversaryKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = AdversaryKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown adversary kind {s:?}; one of {}", names.join(", "))
            })
    }
}

impl Default for EngineModel {
    fn default() -> Self {
        EngineModel {
            push_fanout: Config::default().push_fanout,
            push_feedback: Config::default().push_feedback_forwards,
            announce_fanout: Config::default().announce_fanout,
            latency_ms: 5,
            interval_ms: 1000,
            timeout_ms: 10_000,
            message_loss: 0.0,
            measure_removal: false,
            expiry_ttl_ms: 5_000,
            join_peers: 8,
            adversary_kind: AdversaryKind::All,
            view_size: Config::default().view_size,
        }
    }
}

/// Per-trial measures of the engine model (the `extra` of each [`TrialResult`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineTrial {
    /// Simulated ms from the announcement to convergence (`None`: not converged).
    pub time_ms: Option<u64>,
    pub bytes_sent_per_node_round: f64,
    pub bytes_received_per_node_round: f64,
    /// Requests plus responses sent per honest node per round.
    pub messages_per_node_round: f64,
    pub hops_max: u32,
    pub hops_mean: f64,
    /// Copies of an announcement delivered per honest non-origin node.
    pub redundancy: f64,
    /// `Misbehaved` outputs of honest engines (whole trial).
    pub misbehaviour_reports: u64,
    pub misbehaviour_by_reason: BTreeMap<String, u64>,
    /// Forged, tampered and out-of-bounds records pushed by adversaries.
    pub forged_sent: u64,
    /// Older genuine versions replayed by adversaries.
    pub replays_sent: u64,
    /// Valid records under fresh Sybil keys pushed by flooding adversaries.
    #[serde(default)]
    pub flood_sent: u64,
    /// Records held by an honest store that no honest owner signed (must be 0).
    pub forged_accepted: u64,
    /// Most records any honest store held at a round boundary (memory under a flood).
    #[serde(default)]
    pub max_store_records: u64,
    /// Conflicts (same key, same seq) seen by the honest stores until convergence.
    pub conflicts_seen: u64,
    pub messages_lost: u64,
    pub dial_failures: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawal_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawal_rounds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_rounds: Option<u32>,
}

impl EngineModel {
    /// Runs one trial and returns its convergence round and its measures.
    pub fn simulate(&self, params: &SimParams, seed: u64) -> (Option<u32>, EngineTrial) {
        self.simulate_inspect(params, seed, |_| {})
    }

    /// As [`EngineModel::simulate`], then calls `inspect` with the engine of every present
    /// honest node (for tests: what the stores hold at the end).
    pub fn simulate_inspect(
        &self,
        params: &SimParams,
        seed: u64,
        mut inspect: impl FnMut(&Engine),
    ) -> (Option<u32>, EngineTrial) {
        let mut sim = Sim::new(self, params, seed);
        sim.run();
        for i in sim.present_honest() {
            if let Some(engine) = sim.nodes[i].engine.as_deref() {
                inspect(engine);
            }
        }
        (sim.rounds, sim.out)
    }
}

impl Model for EngineModel {
    fn name(&self) -> &'static str {
        "engine"
    }

    fn check(&self, params: &SimParams) -> Result<(), ParamError> {
        if params.mode != Mode::PushPull {
            return Err(ParamError::Unsupported {
                model: "engine",
                what: "--mode push or pull (the engine always exchanges push-pull)",
            });
        }
        if self.interval_ms == 0 {
            return Err(ParamError::Invalid("interval must be at least 1 ms".into()));
        }
        if !(0.0..1.0).contains(&self.message_loss) {
            return Err(ParamError::Invalid(format!(
                "message loss must be in [0, 1), not {}",
                self.message_loss
            )));
        }
        if self.latency_ms >= self.interval_ms {
            return Err(ParamError::Invalid(format!(
                "latency ({} ms) must be shorter than the round interval ({} ms)",
                self.latency_ms, self.interval_ms
            )));
        }
        if params.max_rounds >= u32::from(NONE) {
            return Err(ParamError::Invalid(format!(
                "max rounds must be below {NONE} with the engine model"
            )));
        }
        let adversaries = adversary_count(params);
        if adversaries > 0 && params.updates > params.nodes - adversaries {
            return Err(ParamError::Invalid(format!(
                "{adversaries} adversaries and {} origins do not fit in {} nodes",
                params.updates, params.nodes
            )));
        }
        Ok(())
    }

    fn run_trial(&self, params: &SimParams, seed: u64) -> TrialResult {
        let (rounds, extra) = self.simulate(params, seed);
        TrialResult {
            seed,
            rounds,
            extra: serde_json::to_value(extra).ok(),
        }
    }

    fn report_extra(
        &self,
        params: &SimParams,
        trials: &[TrialResult],
    ) -> Option<serde_json::Value> {
        let _ = params;
        let per: Vec<EngineTrial> = trials
            .iter()
            .filter_map(|t| t.extra.clone())
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect();
        let summary = EngineSummary::new(self, &per);
        serde_json::to_value(summary).ok()
    }
}

/// `round(adversaries × N)`, never more than `N − 1`.
fn adversary_count(params: &SimParams) -> u32 {
    ((params.adversaries * f64::from(params.nodes)).round() as u32)
        .min(params.nodes.saturating_sub(1))
}

/// Worst, mean and best of some values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub worst: f64,
    pub mean: f64,
    pub best: f64,
}

impl Spread {
    fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let v: Vec<f64> = values.into_iter().collect();
        if v.is_empty() {
            return None;
        }
        Some(Spread {
            worst: v.iter().copied().fold(f64::MIN, f64::max),
            mean: v.iter().sum::<f64>() / v.len() as f64,
            best: v.iter().copied().fold(f64::MAX, f64::min),
        })
    }
}

/// The engine model's report-level data (the report's `engine` field).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineSummary {
    pub push_fanout: usize,
    #[serde(default)]
    pub announce_fanout: Option<usize>,
    /// Partial view size (0 = every member).
    #[serde(default)]
    pub view_size: usize,
    pub latency_ms: u64,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// Over converged trials.
    pub time_ms: Option<Spread>,
    /// Means over trials.
    pub bytes_sent_per_node_round: f64,
    pub bytes_received_per_node_round: f64,
    pub messages_per_node_round: f64,
    /// Max over trials.
    pub hops_max: u32,
    /// Mean over trials.
    pub hops_mean: f64,
    pub redundancy: f64,
    /// Totals over trials.
    pub misbehaviour_reports: u64,
    pub misbehaviour_by_reason: BTreeMap<String, u64>,
    pub forged_sent: u64,
    pub replays_sent: u64,
    #[serde(default)]
    pub flood_sent: u64,
    pub forged_accepted: u64,
    /// Most records any honest store held (max over trials).
    #[serde(default)]
    pub max_store_records: u64,
    /// What the adversaries did.
    #[serde(default)]
    pub adversary_kind: AdversaryKind,
    pub conflicts_seen: u64,
    pub messages_lost: u64,
    pub dial_failures: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawal_ms: Option<Spread>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawal_rounds: Option<Spread>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_ms: Option<Spread>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_rounds: Option<Spread>,
    /// Rows appended to the human table: `[metric, value]`.
    pub table: Vec<[String; 2]>,
}

impl EngineSummary {
    fn new(model: &EngineModel, per: &[EngineTrial]) -> EngineSummary {
        let n = per.len().max(1) as f64;
        let mean = |f: fn(&EngineTrial) -> f64| per.iter().map(f).sum::<f64>() / n;
        let total = |f: fn(&EngineTrial) -> u64| per.iter().map(f).sum::<u64>();
        let mut by_reason = BTreeMap::new();
        for t in per {
            for (k, v) in &t.misbehaviour_by_reason {
                *by_reason.entry(k.clone()).or_insert(0) += v;
            }
        }
        let mut s = EngineSummary {
            push_fanout: model.push_fanout,
            announce_fanout: model.announce_fanout,
            view_size: model.view_size,
            latency_ms: model.latency_ms,
            interval_ms: model.interval_ms,
            timeout_ms: model.timeout_ms,
            time_ms: Spread::of(per.iter().filter_map(|t| t.time_ms).map(|t| t as f64)),
            bytes_sent_per_node_round: mean(|t| t.bytes_sent_per_node_round),
            bytes_received_per_node_round: mean(|t| t.bytes_received_per_node_round),
            messages_per_node_round: mean(|t| t.messages_per_node_round),
            hops_max: per.iter().map(|t| t.hops_max).max().unwrap_or(0),
            hops_mean: mean(|t| t.hops_mean),
            redundancy: mean(|t| t.redundancy),
            misbehaviour_reports: total(|t| t.misbehaviour_reports),
            misbehaviour_by_reason: by_reason,
            forged_sent: total(|t| t.forged_sent),
            replays_sent: total(|t| t.replays_sent),
            flood_sent: total(|t| t.flood_sent),
            forged_accepted: total(|t| t.forged_accepted),
            max_store_records: per.iter().map(|t| t.max_store_records).max().unwrap_or(0),
            adversary_kind: model.adversary_kind,
            conflicts_seen: total(|t| t.conflicts_seen),
            messages_lost: total(|t| t.messages_lost),
            dial_failures: total(|t| t.dial_failures),
            withdrawal_ms: Spread::of(per.iter().filter_map(|t| t.withdrawal_ms).map(|v| v as f64)),
            withdrawal_rounds: Spread::of(
                per.iter()
                    .filter_map(|t| t.withdrawal_rounds)
                    .map(f64::from),
            ),
            expiry_ms: Spread::of(per.iter().filter_map(|t| t.expiry_ms).map(|v| v as f64)),
            expiry_rounds: Spread::of(per.iter().filter_map(|t| t.expiry_rounds).map(f64::from)),
            table: Vec::new(),
        };
        s.table = s.rows(per.len());
        s
    }

    fn rows(&self, trials: usize) -> Vec<[String; 2]> {
        let spread = |s: &Spread, unit: &str| {
            format!(
                "{:.0} / {:.1} / {:.0} {unit} (worst/avg/best)",
                s.worst, s.mean, s.best
            )
        };
        let mut rows = vec![[
            "Push / announce fanout / latency".to_string(),
            format!(
                "{} / {} / {} ms",
                self.push_fanout,
                self.announce_fanout
                    .map_or("ln N + 3".to_owned(), |k| k.to_string()),
                self.latency_ms
            ),
        ]];
        if self.view_size > 0 {
            rows.push(["Partial view".into(), format!("{} members", self.view_size)]);
        }
        if let Some(t) = &self.time_ms {
            rows.push(["Time to converge".into(), spread(t, "ms")]);
        }
        rows.push([
            "Bytes/node/round".into(),
            format!(
                "{:.0} sent, {:.0} received",
                self.bytes_sent_per_node_round, self.bytes_received_per_node_round
            ),
        ]);
        rows.push([
            "Messages/node/round".into(),
            format!("{:.2}", self.messages_per_node_round),
        ]);
        rows.push([
            "Hops".into(),
            format!("max {}, mean {:.2}", self.hops_max, self.hops_mean),
        ]);
        rows.push([
            "Redundancy".into(),
            format!("{:.2} copies/node", self.redundancy),
        ]);
        if self.messages_lost > 0 || self.dial_failures > 0 {
            rows.push([
                "Lost msgs / dial failures".into(),
                format!(
                    "{} / {} (all trials)",
                    self.messages_lost, self.dial_failures
                ),
            ]);
        }
        if self.conflicts_seen > 0 {
            rows.push([
                "Conflicts seen".into(),
                format!("{} (all trials)", self.conflicts_seen),
            ]);
        }
        rows.push([
            "Misbehaviour reports".into(),
            format!("{} (all {trials} trials)", self.misbehaviour_reports),
        ]);
        if self.forged_sent > 0 || self.replays_sent > 0 || self.flood_sent > 0 {
            rows.push([
                "Adversary kind".into(),
                self.adversary_kind.as_str().to_owned(),
            ]);
            rows.push([
                "Forged / replayed / flood sent".into(),
                format!(
                    "{} / {} / {}",
                    self.forged_sent, self.replays_sent, self.flood_sent
                ),
            ]);
            rows.push([
                "Most records held (honest)".into(),
                self.max_store_records.to_string(),
            ]);
        }
        rows.push([
            "Forged records accepted".into(),
            self.forged_accepted.to_string(),
        ]);
        if let (Some(ms), Some(r)) = (&self.withdrawal_ms, &self.withdrawal_rounds) {
            rows.push(["Withdrawal gone".into(), spread(ms, "ms")]);
            rows.push(["Withdrawal gone (boundaries)".into(), spread(r, "")]);
        }
        if let (Some(ms), Some(r)) = (&self.expiry_ms, &self.expiry_rounds) {
            rows.push(["Expired record gone".into(), spread(ms, "ms")]);
            rows.push(["Expired gone (boundaries)".into(), spread(r, "")]);
        }
        rows
    }
}

// ---------------------------------------------------------------------------------------------
// The simulation.

enum Ev {
    Boundary(u32),
    /// `exchange`: `None` for a one-way request ([`Output::Notify`]), answered by no one.
    Request {
        from: usize,
        to: usize,
        exchange: Option<u64>,
        bytes: Vec<u8>,
    },
    Response {
        from: usize,
        to: usize,
        exchange: u64,
        bytes: Vec<u8>,
    },
    Failed {
        node: usize,
        exchange: u64,
        gone: Option<PeerId>,
    },
}

struct Queued {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    /// Reversed: the heap pops the earliest `(at, seq)` first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

struct Node {
    peer: PeerId,
    /// `None` for an adversary.
    engine: Option<Box<Engine>>,
    present: bool,
    unreachable: bool,
    /// Per tracked record: the hop at which this node first held it.
    hop: Vec<u16>,
    /// Required records not yet held.
    missing: u32,
    /// Adversary: its own validly signed far-future record.
    own_far: Option<RawRecord>,
}

/// A record whose spread is followed.
struct Tracked {
    id: RecordId,
    raw: RawRecord,
    required: bool,
}

/// Forgeries of one announcement (adversaries only).
struct Forgeries {
    list: Vec<RawRecord>,
    old: RawRecord,
}

struct Sim<'a> {
    model: &'a EngineModel,
    params: &'a SimParams,
    rng: ChaCha8Rng,
    heap: BinaryHeap<Queued>,
    seq: u64,
    now: u64,
    nodes: Vec<Node>,
    by_peer: HashMap<PeerId, usize>,
    origins: Vec<usize>,
    churnable: Vec<usize>,
    adversaries: Vec<usize>,
    tracked: Vec<Tracked>,
    by_sig: HashMap<u64, usize>,
    /// Genuine records: id → signature.
    genuine: HashMap<RecordId, Vec<u8>>,
    forgeries: Vec<Forgeries>,
    /// Sybil keys used so far by flooding adversaries.
    flood_keys: u64,
    updates: usize,
    incomplete: usize,
    phase1: bool,
    // Phase-1 counters.
    bytes_sent: u64,
    bytes_recv: u64,
    msgs_sent: u64,
    node_rounds: u64,
    copies: u64,
    // Phase 2.
    removal_at: u64,
    w_index: usize,
    e_index: usize,
    w_missing: usize,
    w_done: bool,
    e_done: bool,
    rounds: Option<u32>,
    out: EngineTrial,
}

fn sig_key(raw: &RawRecord) -> u64 {
    let s = &raw.1;
    let mut k = [0u8; 8];
    let n = s.len().min(8);
    k[..n].copy_from_slice(&s[..n]);
    u64::from_le_bytes(k)
}

fn forger_sign(forger: &Keypair, body: Vec<u8>) -> RawRecord {
    let mut msg = SIGNING_DOMAIN.to_vec();
    msg.extend_from_slice(&body);
    let sig = forger.sign(&msg).expect("ed25519 signs");
    RawRecord(ByteBuf::from(body), ByteBuf::from(sig))
}

impl<'a> Sim<'a> {
    fn new(model: &'a EngineModel, params: &'a SimParams, seed: u64) -> Sim<'a> {
        let n = params.nodes as usize;
        let u = params.updates as usize;
        let mut sim = Sim {
            model,
            params,
            rng: ChaCha8Rng::seed_from_u64(seed),
            heap: BinaryHeap::new(),
            seq: 0,
            now: 0,
            nodes: Vec::with_capacity(n),
            by_peer: HashMap::with_capacity(n),
            origins: Vec::new(),
            churnable: Vec::new(),
            adversaries: Vec::new(),
            tracked: Vec::new(),
            by_sig: HashMap::new(),
            genuine: HashMap::new(),
            forgeries: Vec::new(),
            flood_keys: 0,
            updates: u,
            incomplete: 0,
            phase1: true,
            bytes_sent: 0,
            bytes_recv: 0,
            msgs_sent: 0,
            node_rounds: 0,
            copies: 0,
            removal_at: 0,
            w_index: u + 2,
            e_index: u + 3,
            w_missing: 0,
            w_done: false,
            e_done: false,
            rounds: None,
            out: EngineTrial::default(),
        };
        // Roles: origins 0..U; adversaries and unreachable nodes among the others.
        let a = adversary_count(params) as usize;
        let mut others: Vec<usize> = (u..n).collect();
        others.shuffle(&mut sim.rng);
        let adversarial: Vec<bool> = {
            let mut v = vec![false; n];
            for &i in &others[..a] {
                v[i] = true;
            }
            v
        };
        let honest_others = &others[a..];
        let unreachable_count = ((params.unreachable * honest_others.len() as f64).round()
            as usize)
            .min(honest_others.len());
        let mut unreachable = vec![false; n];
        for &i in &honest_others[..unreachable_count] {
            unreachable[i] = true;
        }
        for i in 0..n {
            let idx = sim.add_node(adversarial[i], unreachable[i]);
            debug_assert_eq!(idx, i);
            if adversarial[i] {
                sim.adversaries.push(i);
            } else if i < u {
                sim.origins.push(i);
            } else {
                sim.churnable.push(i);
            }
        }
        // Everyone knows everyone (no node records).
        let peers: Vec<PeerId> = sim.nodes.iter().map(|n| n.peer).collect();
        for node in &mut sim.nodes {
            if let Some(engine) = node.engine.as_mut() {
                for &p in &peers {
                    engine.handle(Input::PeerDiscovered(p), T0);
                }
            }
        }
        sim.make_records(seed);
        sim
    }

    /// Creates a node (present, empty) and returns its index.
    fn add_node(&mut self, adversary: bool, unreachable: bool) -> usize {
        let idx = self.nodes.len();
        let kp = keypair(NODE_KEYS + idx as u64);
        let peer = kp.public().to_peer_id();
        let engine = (!adversary).then(|| {
            let config = Config {
                fanout: self.params.fanout as usize,
                push_fanout: self.model.push_fanout,
                push_feedback_forwards: self.model.push_feedback,
                announce_fanout: self.model.announce_fanout,
                view_size: self.model.view_size,
                ..Config::default()
            };
            Box::new(Engine::new(peer, config, self.rng.r#gen()))
        });
        let own_far = adversary.then(|| {
            specialist(&kp, "adv", &["translate"], 1, T0, 10 * 365 * 24 * HOUR_MS).to_raw()
        });
        let tracked = self.updates + 4;
        let required = if adversary { 0 } else { self.required_count() };
        self.nodes.push(Node {
            peer,
            engine,
            present: true,
            unreachable: unreachable && !adversary,
            hop: vec![NONE; tracked],
            missing: required,
            own_far,
        });
        self.by_peer.insert(peer, idx);
        if !adversary && required > 0 {
            self.incomplete += 1;
        }
        if !adversary && !self.phase1 && !self.w_done {
            self.w_missing += 1;
        }
        idx
    }

    fn required_count(&self) -> u32 {
        self.updates as u32 + u32::from(self.updates >= 2)
    }

    fn track(&mut self, record: &Record, required: bool) -> usize {
        let raw = record.to_raw();
        self.genuine.insert(record.id(), raw.1.to_vec());
        self.by_sig.insert(sig_key(&raw), self.tracked.len());
        self.tracked.push(Tracked {
            id: record.id(),
            raw,
            required,
        });
        self.tracked.len() - 1
    }

    /// Announcements, the conflicting pair and (with adversaries) old versions and forgeries.
    fn make_records(&mut self, seed: u64) {
        let u = self.updates;
        let mut announcements = Vec::with_capacity(u);
        for o in 0..u {
            let kp = keypair(NODE_KEYS + o as u64);
            let rec = specialist(
                &kp,
                &format!("svc-{o}"),
                &["translate", "summarize"],
                2,
                T0,
                HOUR_MS,
            );
            self.track(&rec, true);
            announcements.push((kp, rec));
        }
        // The conflicting pair (indices u, u + 1), or placeholders that nothing matches.
        let mut conflict = Vec::new();
        if u >= 2 {
            let kp = keypair(CONFLICT_KEY);
            let a = specialist(&kp, "contested", &["translate"], 1, T0, HOUR_MS);
            let b = specialist(&kp, "contested", &["summarize"], 1, T0, HOUR_MS);
            let (wa, wb) = (a.id() > b.id(), b.id() > a.id());
            self.track(&a, wa);
            self.track(&b, wb);
            conflict = vec![a, b];
        } else {
            for _ in 0..2 {
                self.tracked.push(Tracked {
                    id: RecordId([0; 32]),
                    raw: RawRecord(ByteBuf::new(), ByteBuf::new()),
                    required: false,
                });
            }
        }
        // Placeholders for the withdrawal and the short-lived record (phase 2).
        for _ in 0..2 {
            self.tracked.push(Tracked {
                id: RecordId([0; 32]),
                raw: RawRecord(ByteBuf::new(), ByteBuf::new()),
                required: false,
            });
        }
        if !self.adversaries.is_empty() {
            let forger = keypair(FORGER_KEY.wrapping_add(seed % 1024));
            let limits = Limits::default();
            for (o, (kp, rec)) in announcements.iter().enumerate() {
                let genuine = rec.to_raw();
                let mut list = Vec::new();
                // 1. The honest body signed by the forger.
                list.push(forger_sign(&forger, genuine.0.to_vec()));
                // 2. A newer version (higher seq, new content) signed by the forger.
                let mut newer = rec.body().clone();
                newer.seq += 1;
                if let directory::Content::Specialist(s) = &mut newer.content {
                    s.endpoint = Some("https://evil.example/v1".into());
                }
                let newer = Record::sign(newer, kp, &limits).expect("forged body within limits");
                list.push(forger_sign(&forger, newer.to_raw().0.to_vec()));
                // 3. The honest body tampered with, under the owner's signature.
                let mut tampered = genuine.0.to_vec();
                if let Some(p) = tampered.windows(7).position(|w| w == b"example") {
                    tampered[p] = b'f';
                } else if let Some(last) = tampered.last_mut() {
                    *last ^= 1;
                }
                list.push(RawRecord(ByteBuf::from(tampered), genuine.1.clone()));
                // 4. A far-future expiry signed by the forger.
                let mut far = rec.body().clone();
                far.expires_at = T0 + 10 * 365 * 24 * HOUR_MS;
                let far = Record::sign(far, kp, &limits).expect("forged body within limits");
                list.push(forger_sign(&forger, far.to_raw().0.to_vec()));
                // The older genuine version, to replay.
                let old = specialist(
                    kp,
                    &format!("svc-{o}"),
                    &["obsolete"],
                    1,
                    T0 - 600_000,
                    HOUR_MS,
                );
                self.genuine.insert(old.id(), old.to_raw().1.to_vec());
                self.forgeries.push(Forgeries {
                    list,
                    old: old.to_raw(),
                });
            }
        }
        // Round 0: publications.
        for (o, (_, rec)) in announcements.into_iter().enumerate() {
            self.publish(self.origins[o], rec, o);
        }
        for (j, rec) in conflict.into_iter().enumerate() {
            self.publish(self.origins[j], rec, u + j);
        }
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Queued {
            at,
            seq: self.seq,
            ev,
        });
    }

    fn publish(&mut self, node: usize, record: Record, tracked: usize) {
        let outputs = self.nodes[node]
            .engine
            .as_mut()
            .expect("origins are honest")
            .handle(Input::Publish(record), T0 + self.now);
        self.gain(node, tracked, None);
        self.process_outputs(node, outputs, None);
    }

    /// Node `i` may now hold tracked record `a`, received from a node at hop `from_hop`
    /// (`None`: published here).
    fn gain(&mut self, i: usize, a: usize, from_hop: Option<u16>) {
        let node = &mut self.nodes[i];
        if node.hop[a] != NONE {
            return;
        }
        let hop = from_hop.map_or(0, |h| h.saturating_add(1).min(NONE - 1));
        let Some(engine) = node.engine.as_ref() else {
            node.hop[a] = hop; // An adversary has seen it.
            return;
        };
        if engine.store().get_by_id(&self.tracked[a].id).is_none() {
            return;
        }
        node.hop[a] = hop;
        if self.phase1 && self.tracked[a].required {
            node.missing -= 1;
            if node.missing == 0 && node.present {
                self.incomplete -= 1;
            }
        }
        if !self.phase1 && a == self.w_index && node.present && !self.w_done {
            self.w_missing -= 1;
        }
    }

    /// Tracked records among `records` (genuine copies only).
    fn hits(&self, records: &[RawRecord]) -> Vec<usize> {
        records
            .iter()
            .filter_map(|r| {
                let &a = self.by_sig.get(&sig_key(r))?;
                (self.tracked[a].raw == *r).then_some(a)
            })
            .collect()
    }

    /// Whether a message is lost: `opens` is true for a request that opens an exchange.
    fn lost(&mut self, opens: bool) -> bool {
        let exchange_lost = opens && self.params.loss > 0.0 && self.rng.gen_bool(self.params.loss);
        let message_loss = self.model.message_loss;
        exchange_lost || (message_loss > 0.0 && self.rng.gen_bool(message_loss))
    }

    fn process_outputs(
        &mut self,
        from: usize,
        outputs: Vec<Output>,
        reply_to: Option<(usize, u64)>,
    ) {
        for output in outputs {
            match output {
                Output::Send {
                    to,
                    exchange,
                    request,
                } => self.send_request(from, to, Some(exchange), &request),
                Output::Notify { to, request } => self.send_request(from, to, None, &request),
                Output::Respond { response, .. } => {
                    if let Some((requester, exchange)) = reply_to {
                        self.send_response(from, requester, exchange, &response);
                    }
                }
                Output::Merged(_) => {}
                Output::Misbehaved { reason, .. } => {
                    self.out.misbehaviour_reports += 1;
                    *self
                        .out
                        .misbehaviour_by_reason
                        .entry(reason.as_str().to_string())
                        .or_insert(0) += 1;
                }
            }
        }
    }

    fn count_sent(&mut self, from: usize, bytes: usize) {
        if self.phase1 && self.nodes[from].engine.is_some() {
            self.bytes_sent += bytes as u64;
            self.msgs_sent += 1;
        }
    }

    /// Sends `request` for `exchange` (`None`: one way, nothing to report back).
    fn send_request(&mut self, from: usize, to: PeerId, exchange: Option<u64>, request: &Request) {
        let latency = self.model.latency_ms;
        let known = self.by_peer.get(&to).copied();
        let nodes = &self.nodes;
        let Some(target) = known.filter(|&t| nodes[t].present && !nodes[t].unreachable) else {
            self.out.dial_failures += 1;
            // Unknown or left: reported gone; present but unreachable: only failed.
            let gone = match known {
                Some(t) if nodes[t].present => None,
                _ => Some(to),
            };
            self.fail_later(from, exchange, latency, gone);
            return;
        };
        let bytes = wire::encode(request);
        self.count_sent(from, bytes.len());
        let opens = matches!(request, Request::Summary(..) | Request::Push(..));
        if self.lost(opens) {
            self.out.messages_lost += 1;
            self.fail_later(from, exchange, self.model.timeout_ms, None);
            return;
        }
        self.push(
            self.now + latency,
            Ev::Request {
                from,
                to: target,
                exchange,
                bytes,
            },
        );
    }

    /// Reports `exchange` of `node` failed `after` ms from now (nothing for a one-way request).
    fn fail_later(&mut self, node: usize, exchange: Option<u64>, after: u64, gone: Option<PeerId>) {
        if let Some(exchange) = exchange {
            self.push(
                self.now + after,
                Ev::Failed {
                    node,
                    exchange,
                    gone,
                },
            );
        }
    }

    fn send_response(&mut self, from: usize, to: usize, exchange: u64, response: &Response) {
        let bytes = wire::encode(response);
        self.count_sent(from, bytes.len());
        if self.lost(false) {
            self.out.messages_lost += 1;
            self.push(
                self.now + self.model.timeout_ms,
                Ev::Failed {
                    node: to,
                    exchange,
                    gone: None,
                },
            );
            return;
        }
        self.push(
            self.now + self.model.latency_ms,
            Ev::Response {
                from,
                to,
                exchange,
                bytes,
            },
        );
    }

    fn count_received(&mut self, to: usize, bytes: usize, hits: &[usize]) {
        if self.phase1 && self.nodes[to].engine.is_some() {
            self.bytes_recv += bytes as u64;
            self.copies += hits.iter().filter(|&&a| a < self.updates).count() as u64;
        }
    }

    fn on_request(&mut self, from: usize, to: usize, exchange: Option<u64>, bytes: Vec<u8>) {
        if !self.nodes[to].present {
            // Left while the request was in flight: the connection is gone.
            let gone = Some(self.nodes[to].peer);
            self.fail_later(from, exchange, 0, gone);
            return;
        }
        let request: Request = wire::decode(&bytes, gossip::wire::MAX_MESSAGE_BYTES)
            .expect("the codec decodes what it encoded");
        let hits = match &request {
            Request::Reconcile(_, records, _) | Request::Push(records) => self.hits(records),
            Request::Summary(..) | Request::Have(_) => Vec::new(),
        };
        self.count_received(to, bytes.len(), &hits);
        let from_peer = self.nodes[from].peer;
        let sender_hops: Vec<u16> = hits.iter().map(|&a| self.nodes[from].hop[a]).collect();
        let now = T0 + self.now;
        match self.nodes[to].engine.as_mut() {
            Some(engine) => {
                let outputs = engine.handle(
                    Input::Request {
                        from: from_peer,
                        channel: exchange.unwrap_or(u64::MAX),
                        request,
                    },
                    now,
                );
                for (&a, &h) in hits.iter().zip(&sender_hops) {
                    self.gain(to, a, Some(h));
                }
                let reply_to = exchange.map(|exchange| (from, exchange));
                self.process_outputs(to, outputs, reply_to);
            }
            None => {
                for (&a, &h) in hits.iter().zip(&sender_hops) {
                    self.gain(to, a, Some(h));
                }
                let Some(exchange) = exchange else {
                    return; // One way: nothing to answer.
                };
                let response = match request {
                    Request::Summary(..) => {
                        let lie = self.model.adversary_kind.does(AdversaryKind::ClockLie);
                        let time = T0 + self.now - if lie { HOUR_MS } else { 0 };
                        Some(Response::InSync(time))
                    }
                    Request::Reconcile(..) => Some(Response::Reconcile(None, Vec::new(), 0)),
                    Request::Push(_) | Request::Have(_) => {
                        (!self.rng.gen_bool(0.5)).then_some(Response::PushAck(0))
                    }
                };
                match response {
                    Some(r) => self.send_response(to, from, exchange, &r),
                    None => self.push(
                        self.now + self.model.timeout_ms,
                        Ev::Failed {
                            node: from,
                            exchange,
                            gone: None,
                        },
                    ),
                }
            }
        }
    }

    fn on_response(&mut self, from: usize, to: usize, exchange: u64, bytes: Vec<u8>) {
        if !self.nodes[to].present || self.nodes[to].engine.is_none() {
            return;
        }
        let response: Response = wire::decode(&bytes, gossip::wire::MAX_MESSAGE_BYTES)
            .expect("the codec decodes what it encoded");
        let hits = match &response {
            Response::Reconcile(_, records, _) => self.hits(records),
            _ => Vec::new(),
        };
        self.count_received(to, bytes.len(), &hits);
        let sender_hops: Vec<u16> = hits.iter().map(|&a| self.nodes[from].hop[a]).collect();
        let now = T0 + self.now;
        let engine = self.nodes[to].engine.as_mut().expect("honest");
        let outputs = engine.handle(Input::Response { exchange, response }, now);
        for (&a, &h) in hits.iter().zip(&sender_hops) {
            self.gain(to, a, Some(h));
        }
        self.process_outputs(to, outputs, None);
    }

    fn on_failed(&mut self, node: usize, exchange: u64, gone: Option<PeerId>) {
        let now = T0 + self.now;
        let n = &mut self.nodes[node];
        if !n.present {
            return;
        }
        let Some(engine) = n.engine.as_mut() else {
            return;
        };
        let mut outputs = engine.handle(Input::Failed { exchange }, now);
        if let Some(peer) = gone {
            outputs.extend(engine.handle(Input::PeerGone(peer), now));
        }
        self.process_outputs(node, outputs, None);
    }

    fn present_honest(&self) -> impl Iterator<Item = usize> + '_ {
        self.origins.iter().chain(&self.churnable).copied()
    }

    fn churn(&mut self) {
        let k = ((self.params.churn * self.churnable.len() as f64).round() as usize)
            .min(self.churnable.len());
        if k == 0 {
            return;
        }
        let len = self.churnable.len();
        for j in 0..k {
            let pick = self.rng.gen_range(j..len);
            self.churnable.swap(j, pick);
        }
        for j in 0..k {
            let old = self.churnable[j];
            let node = &mut self.nodes[old];
            node.present = false;
            node.engine = None; // Its state is gone; frees memory.
            if node.missing > 0 {
                self.incomplete -= 1;
            }
            if !self.phase1 && !self.w_done && node.hop[self.w_index] == NONE {
                self.w_missing -= 1;
            }
            let unreachable = node.unreachable;
            let joiner = self.add_node(false, unreachable);
            self.churnable[j] = joiner;
        }
        // Introductions: each joiner to `join_peers` random present nodes, and back.
        let present: Vec<usize> = self
            .present_honest()
            .chain(self.adversaries.iter().copied())
            .collect();
        let now = T0 + self.now;
        for j in 0..k {
            let joiner = self.churnable[j];
            let joiner_peer = self.nodes[joiner].peer;
            let want = self.model.join_peers.min(present.len() - 1);
            let mut picked: Vec<usize> = Vec::with_capacity(want);
            while picked.len() < want {
                let p = present[self.rng.gen_range(0..present.len())];
                if p != joiner && !picked.contains(&p) {
                    picked.push(p);
                }
            }
            for p in picked {
                let peer = self.nodes[p].peer;
                if let Some(e) = self.nodes[joiner].engine.as_mut() {
                    e.handle(Input::PeerDiscovered(peer), now);
                }
                if let Some(e) = self.nodes[p].engine.as_mut() {
                    e.handle(Input::PeerDiscovered(joiner_peer), now);
                }
            }
        }
    }

    fn adversary_push(&mut self, adv: usize) {
        let honest: Vec<usize> = self.present_honest().collect();
        if honest.is_empty() {
            return;
        }
        let kind = self.model.adversary_kind;
        let mut records = Vec::new();
        let mut forged = 0u64;
        let mut replays = 0u64;
        if kind.does(AdversaryKind::Immortal)
            && let Some(own) = &self.nodes[adv].own_far
        {
            records.push(own.clone());
            forged += 1;
        }
        if kind.does(AdversaryKind::Forge) {
            let seen: Vec<usize> = (0..self.updates)
                .filter(|&a| self.nodes[adv].hop[a] != NONE)
                .collect();
            for _ in 0..seen.len().min(3) {
                let a = seen[self.rng.gen_range(0..seen.len())];
                records.extend(self.forgeries[a].list.iter().cloned());
                forged += self.forgeries[a].list.len() as u64;
            }
        }
        if kind.does(AdversaryKind::Replay) {
            for _ in 0..self.updates.min(3) {
                let a = self.rng.gen_range(0..self.updates);
                records.push(self.forgeries[a].old.clone());
                replays += 1;
            }
        }
        if kind.does(AdversaryKind::Flood) {
            // Fresh Sybil keys: valid records nobody can tell from honest ones; the store caps
            // bound what they cost.
            for _ in 0..FLOOD_PER_ROUND {
                self.flood_keys += 1;
                let kp = keypair(FLOOD_KEYS + self.flood_keys);
                let r = specialist(&kp, "sybil", &["translate"], 1, T0 + self.now, HOUR_MS);
                self.genuine.insert(r.id(), r.to_raw().1.to_vec());
                records.push(r.to_raw());
            }
            self.out.flood_sent += FLOOD_PER_ROUND;
        }
        if records.is_empty() {
            return;
        }
        let k = (self.params.fanout as usize).min(honest.len());
        let mut targets: Vec<usize> = Vec::with_capacity(k);
        while targets.len() < k {
            let t = honest[self.rng.gen_range(0..honest.len())];
            if !targets.contains(&t) {
                targets.push(t);
            }
        }
        let request = Request::Push(records);
        for t in targets {
            self.out.forged_sent += forged;
            self.out.replays_sent += replays;
            let peer = self.nodes[t].peer;
            self.send_request(adv, peer, Some(u64::MAX), &request);
        }
    }

    fn check_forged(&mut self) {
        let mut bad = 0;
        for i in self.present_honest() {
            if let Some(engine) = self.nodes[i].engine.as_ref() {
                for r in engine.store().iter() {
                    let ok = self
                        .genuine
                        .get(&r.id())
                        .is_some_and(|sig| r.to_raw().1[..] == sig[..]);
                    if !ok {
                        bad += 1;
                    }
                }
            }
        }
        self.out.forged_accepted = self.out.forged_accepted.max(bad);
        let held = self
            .present_honest()
            .filter_map(|i| self.nodes[i].engine.as_ref())
            .map(|e| e.store().len() as u64)
            .max()
            .unwrap_or(0);
        self.out.max_store_records = self.out.max_store_records.max(held);
    }

    fn on_boundary(&mut self, r: u32) {
        if self.params.churn > 0.0 {
            self.churn();
        }
        if self.phase1 {
            self.node_rounds += (self.origins.len() + self.churnable.len()) as u64;
        }
        let mut order: Vec<usize> = self
            .present_honest()
            .chain(self.adversaries.iter().copied())
            .collect();
        order.shuffle(&mut self.rng);
        let now = T0 + self.now;
        for i in order {
            match self.nodes[i].engine.as_mut() {
                Some(engine) => {
                    let outputs = engine.handle(Input::Tick, now);
                    self.process_outputs(i, outputs, None);
                }
                None => self.adversary_push(i),
            }
        }
        if !self.adversaries.is_empty() {
            self.check_forged();
        }
        if !self.phase1 && !self.e_done {
            let id = self.tracked[self.e_index].id;
            let held = self.present_honest().any(|i| {
                self.nodes[i]
                    .engine
                    .as_ref()
                    .is_some_and(|e| e.store().get_by_id(&id).is_some())
            });
            if !held {
                self.e_done = true;
                self.out.expiry_ms = Some(self.now - self.removal_at);
                self.out.expiry_rounds = Some(self.boundaries_since(self.removal_at));
            }
        }
        self.push(
            u64::from(r + 1) * self.model.interval_ms,
            Ev::Boundary(r + 1),
        );
    }

    fn boundaries_since(&self, t: u64) -> u32 {
        let i = self.model.interval_ms;
        (self.now / i - t / i) as u32
    }

    fn converged(&mut self) {
        self.phase1 = false;
        let interval = self.model.interval_ms;
        self.rounds = Some((self.now / interval) as u32);
        self.out.time_ms = Some(self.now);
        self.finish_phase1();
        if self.model.measure_removal {
            self.start_removal();
        }
    }

    fn finish_phase1(&mut self) {
        let node_rounds =
            self.node_rounds
                .max((self.origins.len() + self.churnable.len()) as u64) as f64;
        self.out.bytes_sent_per_node_round = self.bytes_sent as f64 / node_rounds;
        self.out.bytes_received_per_node_round = self.bytes_recv as f64 / node_rounds;
        self.out.messages_per_node_round = self.msgs_sent as f64 / node_rounds;
        let (mut max, mut sum, mut count) = (0u32, 0u64, 0u64);
        let mut receivers = 0u64;
        for i in self.present_honest().collect::<Vec<_>>() {
            let node = &self.nodes[i];
            for a in 0..self.updates {
                if self.origins.get(a) == Some(&i) {
                    continue;
                }
                receivers += 1;
                let h = node.hop[a];
                if h != NONE {
                    max = max.max(u32::from(h));
                    sum += u64::from(h);
                    count += 1;
                }
            }
            if let Some(e) = node.engine.as_ref() {
                self.out.conflicts_seen += e.store().stats().conflicts;
            }
        }
        self.out.hops_max = max;
        self.out.hops_mean = if count > 0 {
            sum as f64 / count as f64
        } else {
            0.0
        };
        self.out.redundancy = if receivers > 0 {
            self.copies as f64 / receivers as f64
        } else {
            0.0
        };
    }

    fn start_removal(&mut self) {
        let origin = self.origins[0];
        let kp = keypair(NODE_KEYS + origin as u64);
        let now = T0 + self.now;
        let mut issuer = Issuer::new(kp.clone(), Limits::default());
        issuer.restore(
            "svc-0",
            Issued {
                seq: 2,
                expires_at: T0 + HOUR_MS,
            },
        );
        let w = issuer
            .withdrawal("svc-0", HOUR_MS, now)
            .expect("withdrawal within limits");
        let e = specialist(
            &kp,
            "ephemeral",
            &["translate"],
            1,
            now,
            self.model.expiry_ttl_ms,
        );
        for (index, record) in [(self.w_index, &w), (self.e_index, &e)] {
            let raw = record.to_raw();
            self.genuine.insert(record.id(), raw.1.to_vec());
            self.by_sig.insert(sig_key(&raw), index);
            self.tracked[index] = Tracked {
                id: record.id(),
                raw,
                required: false,
            };
        }
        self.removal_at = self.now;
        self.w_missing = self.present_honest().count();
        self.publish(origin, w, self.w_index);
        self.publish(origin, e, self.e_index);
    }

    fn run(&mut self) {
        let interval = self.model.interval_ms;
        let horizon = u64::from(self.params.max_rounds + 1) * interval;
        let mut deadline = horizon;
        if self.incomplete == 0 {
            self.converged();
            if !self.model.measure_removal {
                return;
            }
            deadline = self.now + horizon;
        }
        self.push(interval, Ev::Boundary(1));
        while let Some(q) = self.heap.pop() {
            if q.at >= deadline {
                break;
            }
            self.now = q.at;
            match q.ev {
                Ev::Boundary(r) => self.on_boundary(r),
                Ev::Request {
                    from,
                    to,
                    exchange,
                    bytes,
                } => self.on_request(from, to, exchange, bytes),
                Ev::Response {
                    from,
                    to,
                    exchange,
                    bytes,
                } => self.on_response(from, to, exchange, bytes),
                Ev::Failed {
                    node,
                    exchange,
                    gone,
                } => self.on_failed(node, exchange, gone),
            }
            if self.phase1 {
                if self.incomplete == 0 {
                    self.converged();
                    if !self.model.measure_removal {
                        break;
                    }
                    deadline = self.now + horizon;
                }
            } else {
                if !self.w_done && self.w_missing == 0 {
                    self.w_done = true;
                    self.out.withdrawal_ms = Some(self.now - self.removal_at);
                    self.out.withdrawal_rounds = Some(self.boundaries_since(self.removal_at));
                }
                if self.w_done && self.e_done {
                    break;
                }
            }
        }
        if self.phase1 {
            self.finish_phase1();
        }
        if self.rounds.is_some_and(|r| r > self.params.max_rounds) {
            self.rounds = None;
        }
        self.check_forged();
    }
}
