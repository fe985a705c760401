//! `bench compare`, part 1: bytes per node per round of the founding design's full-view
//! exchange (each side of every exchange ships its whole directory) against ours, with real
//! signed records and the real codec.
//!
//! Ours is measured on an in-memory network of `nodes` real [`gossip::Engine`]s, each holding
//! the same `records` signed specialist records (`directory::sample::population`: one owner per
//! record, about 230 bytes each encoded). Every message an engine emits — exchange requests and
//! responses, rumor pushes, id announcements and the fetches they trigger — is encoded with the
//! wire codec, decoded at the receiver at the byte limit and fed to the receiving engine at
//! once (no latency, no loss); bytes are the encoded message lengths, counted at the receiver.
//! A round is: the owners' refreshes of that round (churn), each published on its owner's home
//! engine (record `i` lives on engine `i mod nodes`) and routed to the end, then every engine's
//! `Tick` (`fanout` exchanges) in a seeded random order, each routed to the end.
//!
//! - **steady state**: identical directories, nothing changes;
//! - **churn**: each round `ceil(churn × records)` records (in turn) are re-signed by their
//!   owner with the next seq and a fresh one-hour lifetime.
//!
//! The full view is not simulated message by message: its cost per node per round follows from
//! the size of one directory as one message (`Push` of every record, the real codec), measured
//! on the engines' stores: every node starts `fanout` exchanges per round and, on average,
//! answers `fanout`; in each it receives the other side's whole directory, so it receives
//! `2 × fanout` directories per round, whether or not anything changed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use anyhow::{Context, bail};
use directory::sample::{keypair, population, specialist};
use directory::{Limits, PeerId, Record};
use gossip::wire::{self, Request, Response};
use gossip::{Config, Engine, Input, Output};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::Serialize;

/// Key numbers of the simulated nodes (the records' owners are `0..records`).
const NODE_KEYS: u64 = 1 << 40;
/// Lifetime of every record (the directory's maximum TTL).
const TTL_MS: u64 = 3_600_000;
/// Simulated round length (only the engines' clocks see it).
const ROUND_MS: u64 = 1_000;

/// Settings of part 1.
#[derive(Debug, Clone, Serialize)]
pub struct FullViewSettings {
    /// Directory sizes.
    pub records: Vec<u64>,
    /// Engines of the in-memory network.
    pub nodes: usize,
    /// Fraction of the records refreshed per round under churn.
    pub churn: f64,
    /// Rounds measured in steady state.
    pub steady_rounds: u32,
    /// Churn rounds run before the measured ones (so that the network is in its churn regime).
    pub churn_warmup: u32,
    /// Churn rounds measured.
    pub churn_rounds: u32,
    pub seed: u64,
}

/// Bytes one node received in the measured rounds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Phase {
    pub rounds: u32,
    /// Mean over nodes and rounds of the encoded bytes received per round (requests and
    /// responses together).
    pub received_per_node_per_round: f64,
    /// The most one node received in one round.
    pub received_max_node_round: u64,
    /// Messages (requests + responses) delivered per node per round.
    pub messages_per_node_per_round: f64,
    /// Fraction of each round's refreshes held by every node at the end of that round.
    pub refreshes_everywhere_at_round_end: Option<f64>,
    /// Protocol violations reported by the engines (must be 0).
    pub misbehaved: u64,
    /// The received bytes and messages per node per round by message kind (`Push`, `Have`,
    /// `PushAck`, the fetches of announced ids, the exchanges' `Summary`, `Reconcile`, ...).
    pub breakdown: BTreeMap<&'static str, KindShare>,
    /// Records received per node per round, in any message (copies, duplicates included).
    pub records_per_node_per_round: f64,
}

/// One kind of message in [`Phase::breakdown`].
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct KindShare {
    pub bytes_per_node_per_round: f64,
    pub messages_per_node_per_round: f64,
}

/// One variant of our protocol.
#[derive(Debug, Clone, Serialize)]
pub struct Ours {
    pub variant: &'static str,
    pub push_fanout: usize,
    /// `None`: the default ⌈ln N⌉ + 3; `Some(0)`: off.
    pub announce_fanout: Option<usize>,
    pub steady: Phase,
    pub churn: Phase,
    /// Churn-free rounds after the churn until every store held the same set (None: not within
    /// 10 rounds).
    pub rounds_to_identical_after_churn: Option<u32>,
    /// churn bytes / the minimum.
    pub churn_multiple_of_minimum: f64,
    pub setup_secs: f64,
    pub run_secs: f64,
}

/// Part 1 at one directory size.
#[derive(Debug, Clone, Serialize)]
pub struct FullViewRow {
    pub records: u64,
    pub nodes: usize,
    pub fanout: usize,
    /// Mean encoded size of one signed record (`Record::encode`).
    pub record_bytes: f64,
    /// One whole directory as one message (`[1, Push(every record)]`), mean over the nodes.
    pub full_view_message_bytes: f64,
    /// `2 × fanout × full_view_message_bytes`: received per node per round, steady or not.
    pub full_view_per_node_per_round: f64,
    pub refreshes_per_round: u64,
    /// `refreshes_per_round × record_bytes`: what each node must at least receive per round
    /// under churn.
    pub churn_minimum_per_node_per_round: f64,
    pub ours: Vec<Ours>,
}

/// Runs part 1 for every size and both variants of ours.
pub fn run(settings: &FullViewSettings) -> anyhow::Result<Vec<FullViewRow>> {
    if settings.nodes < 2 {
        bail!("full view: at least 2 nodes");
    }
    if !(0.0..=1.0).contains(&settings.churn) {
        bail!("full view: churn must be within [0, 1]");
    }
    let mut rows = Vec::new();
    for &records in &settings.records {
        if records == 0 || records > 100_000 {
            bail!("full view: between 1 and 100000 records, not {records}");
        }
        let now = node::event_loop::now_ms();
        let started = Instant::now();
        let population = population(0, records, now - 1000);
        tracing::info!(
            records,
            secs = started.elapsed().as_secs_f64(),
            "full view: records signed"
        );
        let record_bytes = population
            .iter()
            .map(|r| r.encode().len() as f64)
            .sum::<f64>()
            / records as f64;
        let refreshes = ((settings.churn * records as f64).ceil() as u64).min(records);
        let mut ours = Vec::new();
        let mut full_view = 0.0;
        for (variant, push_fanout, announce_fanout) in [
            ("push + announce + reconciliation (default)", 1, None),
            ("reconciliation only (push off)", 0, Some(0)),
        ] {
            let (o, fv) = run_variant(
                settings,
                &population,
                now,
                variant,
                push_fanout,
                announce_fanout,
                refreshes,
                record_bytes,
            )?;
            full_view = fv;
            ours.push(o);
        }
        let fanout = Config::default().fanout;
        rows.push(FullViewRow {
            records,
            nodes: settings.nodes,
            fanout,
            record_bytes,
            full_view_message_bytes: full_view,
            full_view_per_node_per_round: 2.0 * fanout as f64 * full_view,
            refreshes_per_round: refreshes,
            churn_minimum_per_node_per_round: refreshes as f64 * record_bytes,
            ours,
        });
    }
    Ok(rows)
}

#[allow(clippy::too_many_arguments)]
fn run_variant(
    settings: &FullViewSettings,
    population: &[Record],
    start_ms: u64,
    variant: &'static str,
    push_fanout: usize,
    announce_fanout: Option<usize>,
    refreshes: u64,
    record_bytes: f64,
) -> anyhow::Result<(Ours, f64)> {
    let records = population.len() as u64;
    let setup = Instant::now();
    let config = Config {
        push_fanout,
        announce_fanout,
        limits: Limits::default(),
        ..Config::default()
    };
    let mut net = Net::new(settings.nodes, &config, settings.seed, population, start_ms)?;
    let setup_secs = setup.elapsed().as_secs_f64();
    tracing::info!(
        records,
        nodes = settings.nodes,
        variant,
        setup_secs,
        "full view: engines loaded"
    );
    let run = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(settings.seed);
    let mut round: u64 = 0;

    // Steady state: identical stores.
    let mut steady = Phase::default();
    let mut totals = Totals::default();
    for _ in 0..settings.steady_rounds {
        round += 1;
        let now = start_ms + round * ROUND_MS;
        let before = net.counters();
        net.tick_all(now, &mut rng)?;
        totals.add(&before, &net.counters());
    }
    totals.finish(&mut steady, settings.nodes, net.misbehaved);
    // One whole directory as one message, from the engines' own stores.
    let full_view = net.full_view_bytes();

    // Churn.
    let mut seqs: Vec<u64> = vec![1; population.len()];
    let mut next = 0usize;
    let mut churn = Phase::default();
    let mut totals = Totals::default();
    let mut everywhere = Vec::new();
    let misbehaved_before = net.misbehaved;
    for r in 0..settings.churn_warmup + settings.churn_rounds {
        round += 1;
        let now = start_ms + round * ROUND_MS;
        let before = net.counters();
        let mut ids = Vec::with_capacity(refreshes as usize);
        for _ in 0..refreshes {
            let i = next;
            next = (next + 1) % population.len();
            seqs[i] += 1;
            let record = specialist(
                &keypair(i as u64),
                &format!("svc-{i}"),
                &["translate", "summarize"],
                seqs[i],
                now,
                TTL_MS,
            );
            ids.push(record.id());
            net.publish(i % settings.nodes, record, now)?;
        }
        net.tick_all(now, &mut rng)?;
        if r >= settings.churn_warmup {
            totals.add(&before, &net.counters());
            let held = ids
                .iter()
                .filter(|id| {
                    net.engines
                        .iter()
                        .all(|e| e.store().get_by_id(id).is_some())
                })
                .count();
            everywhere.push(held as f64 / ids.len().max(1) as f64);
        }
    }
    totals.finish(
        &mut churn,
        settings.nodes,
        net.misbehaved - misbehaved_before,
    );
    churn.refreshes_everywhere_at_round_end =
        Some(everywhere.iter().sum::<f64>() / everywhere.len().max(1) as f64);
    // Then without churn until every store holds the same set.
    let mut identical = None;
    for k in 0..=10 {
        if net.identical() {
            identical = Some(k);
            break;
        }
        round += 1;
        net.tick_all(start_ms + round * ROUND_MS, &mut rng)?;
    }
    let minimum = refreshes as f64 * record_bytes;
    let ours = Ours {
        variant,
        push_fanout,
        announce_fanout,
        churn_multiple_of_minimum: if minimum > 0.0 {
            churn.received_per_node_per_round / minimum
        } else {
            0.0
        },
        steady,
        churn,
        rounds_to_identical_after_churn: identical,
        setup_secs,
        run_secs: run.elapsed().as_secs_f64(),
    };
    tracing::info!(
        records,
        variant,
        steady = ours.steady.received_per_node_per_round,
        churn = ours.churn.received_per_node_per_round,
        "full view: ours measured"
    );
    Ok((ours, full_view))
}

#[derive(Default)]
struct Totals {
    rounds: u32,
    received: u64,
    messages: u64,
    max: u64,
    kinds: BTreeMap<&'static str, (u64, u64)>,
    records: u64,
}

/// Counters of the whole network at one moment: per node (bytes, messages), per kind
/// (bytes, messages), records received.
type Counters = (Vec<(u64, u64)>, BTreeMap<&'static str, (u64, u64)>, u64);

impl Totals {
    fn add(&mut self, before: &Counters, after: &Counters) {
        self.rounds += 1;
        for (b, a) in before.0.iter().zip(&after.0) {
            let got = a.0 - b.0;
            self.received += got;
            self.messages += a.1 - b.1;
            self.max = self.max.max(got);
        }
        for (kind, a) in &after.1 {
            let b = before.1.get(kind).copied().unwrap_or_default();
            let t = self.kinds.entry(kind).or_default();
            t.0 += a.0 - b.0;
            t.1 += a.1 - b.1;
        }
        self.records += after.2 - before.2;
    }

    fn finish(&self, phase: &mut Phase, nodes: usize, misbehaved: u64) {
        let node_rounds = (self.rounds as usize * nodes).max(1) as f64;
        phase.rounds = self.rounds;
        phase.received_per_node_per_round = self.received as f64 / node_rounds;
        phase.messages_per_node_per_round = self.messages as f64 / node_rounds;
        phase.received_max_node_round = self.max;
        phase.misbehaved = misbehaved;
        phase.breakdown = self
            .kinds
            .iter()
            .map(|(kind, (bytes, messages))| {
                let share = KindShare {
                    bytes_per_node_per_round: *bytes as f64 / node_rounds,
                    messages_per_node_per_round: *messages as f64 / node_rounds,
                };
                (*kind, share)
            })
            .collect();
        phase.records_per_node_per_round = self.records as f64 / node_rounds;
    }
}

/// The kind of a request and of the answer it gets, for the breakdown. A `Reconcile` with
/// neither a Negentropy message nor records is the fetch of announced ids.
fn request_kind(request: &Request) -> (&'static str, &'static str) {
    match request {
        Request::Summary(..) => ("Summary", "InSync/Differ"),
        Request::Reconcile(None, records, _) if records.is_empty() => (
            "fetch (Reconcile wants)",
            "fetch answer (Reconcile records)",
        ),
        Request::Reconcile(..) => ("Reconcile", "Reconcile answer"),
        Request::Push(_) => ("Push", "PushAck to Push"),
        Request::Have(_) => ("Have", "PushAck to Have"),
    }
}

/// Engines wired to each other in memory.
struct Net {
    engines: Vec<Engine>,
    ids: Vec<PeerId>,
    index: HashMap<PeerId, usize>,
    /// Encoded bytes and messages received by each engine.
    received: Vec<u64>,
    messages: Vec<u64>,
    /// Received bytes and messages by kind, all engines together.
    kinds: BTreeMap<&'static str, (u64, u64)>,
    /// Records received in any message, all engines together.
    records: u64,
    /// Open inbound requests: (responder, channel) → (requester, its exchange id, the kind
    /// of its response).
    channels: HashMap<(usize, u64), (usize, u64, &'static str)>,
    next_channel: u64,
    misbehaved: u64,
    limit: usize,
}

impl Net {
    fn new(
        nodes: usize,
        config: &Config,
        seed: u64,
        population: &[Record],
        now: u64,
    ) -> anyhow::Result<Net> {
        let ids: Vec<PeerId> = (0..nodes)
            .map(|i| keypair(NODE_KEYS + i as u64).public().to_peer_id())
            .collect();
        let mut engines: Vec<Engine> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| Engine::new(*id, config.clone(), seed.wrapping_add(i as u64)))
            .collect();
        // Loaded as one push from a loader that is not a member (batch signature checks, as
        // for any gossip), before any peer is known: nothing is pushed on.
        let loader = keypair(NODE_KEYS - 1).public().to_peer_id();
        let raws: Vec<_> = population.iter().map(|r| r.to_raw()).collect();
        for e in &mut engines {
            e.handle(
                Input::Request {
                    from: loader,
                    channel: 0,
                    request: Request::Push(raws.clone()),
                },
                now,
            );
            for id in &ids {
                e.handle(Input::PeerDiscovered(*id), now);
                e.handle(Input::Connected(*id), now);
            }
        }
        if let Some(short) = engines.iter().find(|e| e.store().len() != population.len()) {
            bail!(
                "full view: an engine holds {} of the {} records after loading",
                short.store().len(),
                population.len()
            );
        }
        let index = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        Ok(Net {
            engines,
            ids,
            index,
            received: vec![0; nodes],
            messages: vec![0; nodes],
            kinds: BTreeMap::new(),
            records: 0,
            channels: HashMap::new(),
            next_channel: 0,
            misbehaved: 0,
            limit: config.max_message_bytes,
        })
    }

    fn counters(&self) -> Counters {
        let per_node = self
            .received
            .iter()
            .copied()
            .zip(self.messages.iter().copied())
            .collect();
        (per_node, self.kinds.clone(), self.records)
    }

    fn count(&mut self, kind: &'static str, bytes: usize) {
        let k = self.kinds.entry(kind).or_default();
        k.0 += bytes as u64;
        k.1 += 1;
    }

    fn publish(&mut self, at: usize, record: Record, now: u64) -> anyhow::Result<()> {
        let out = self.engines[at].handle(Input::Publish(record), now);
        self.route(at, out, now)
    }

    fn tick_all(&mut self, now: u64, rng: &mut rand::rngs::StdRng) -> anyhow::Result<()> {
        let mut order: Vec<usize> = (0..self.engines.len()).collect();
        order.shuffle(rng);
        for i in order {
            let out = self.engines[i].handle(Input::Tick, now);
            self.route(i, out, now)?;
        }
        Ok(())
    }

    /// Delivers `outputs` of engine `from` and everything they cause, to the end.
    fn route(&mut self, from: usize, outputs: Vec<Output>, now: u64) -> anyhow::Result<()> {
        let mut queue: VecDeque<(usize, Output)> = outputs.into_iter().map(|o| (from, o)).collect();
        while let Some((at, output)) = queue.pop_front() {
            let out = match output {
                Output::Send {
                    to,
                    exchange,
                    request,
                } => self.deliver_request(at, to, Some(exchange), request, now)?,
                // One way: delivered, and its answer dropped.
                Output::Notify { to, request } => {
                    self.deliver_request(at, to, None, request, now)?
                }
                Output::Respond { channel, response } => {
                    self.deliver_response(at, channel, response, now)?
                }
                Output::Misbehaved { .. } => {
                    self.misbehaved += 1;
                    continue;
                }
                Output::Merged(_) => continue,
            };
            queue.extend(out);
        }
        Ok(())
    }

    /// Hands `request` of engine `at` to its receiver (`exchange`: `None` for one way) and
    /// returns the outputs it causes, each with the engine that gave it.
    fn deliver_request(
        &mut self,
        at: usize,
        to: PeerId,
        exchange: Option<u64>,
        request: Request,
        now: u64,
    ) -> anyhow::Result<Vec<(usize, Output)>> {
        let Some(&j) = self.index.get(&to) else {
            let Some(exchange) = exchange else {
                return Ok(Vec::new());
            };
            let out = self.engines[at].handle(Input::Failed { exchange }, now);
            return Ok(out.into_iter().map(|o| (at, o)).collect());
        };
        let bytes = wire::encode(&request);
        self.received[j] += bytes.len() as u64;
        self.messages[j] += 1;
        let request: Request = wire::decode(&bytes, self.limit).context("decoding a request")?;
        let (kind, answer) = request_kind(&request);
        self.count(kind, bytes.len());
        if let Request::Push(r) | Request::Reconcile(_, r, _) = &request {
            self.records += r.len() as u64;
        }
        self.next_channel += 1;
        let channel = self.next_channel;
        if let Some(exchange) = exchange {
            self.channels.insert((j, channel), (at, exchange, answer));
        }
        let input = Input::Request {
            from: self.ids[at],
            channel,
            request,
        };
        let out = self.engines[j].handle(input, now);
        Ok(out.into_iter().map(|o| (j, o)).collect())
    }

    /// Hands the answer engine `at` gave on `channel` to the requester, if it waits for one.
    fn deliver_response(
        &mut self,
        at: usize,
        channel: u64,
        response: Response,
        now: u64,
    ) -> anyhow::Result<Vec<(usize, Output)>> {
        let Some((requester, exchange, kind)) = self.channels.remove(&(at, channel)) else {
            return Ok(Vec::new());
        };
        let bytes = wire::encode(&response);
        self.received[requester] += bytes.len() as u64;
        self.messages[requester] += 1;
        let response: Response = wire::decode(&bytes, self.limit).context("decoding a response")?;
        let kind = match response {
            Response::Refused(_) => "Refused",
            _ => kind,
        };
        self.count(kind, bytes.len());
        if let Response::Reconcile(_, r, _) = &response {
            self.records += r.len() as u64;
        }
        let out = self.engines[requester].handle(Input::Response { exchange, response }, now);
        Ok(out.into_iter().map(|o| (requester, o)).collect())
    }

    /// Mean over the engines of one whole directory encoded as one message.
    fn full_view_bytes(&self) -> f64 {
        let total: usize = self
            .engines
            .iter()
            .map(|e| {
                let raws = e.store().iter().map(|r| r.to_raw()).collect();
                wire::encode(&Request::Push(raws)).len()
            })
            .sum();
        total as f64 / self.engines.len() as f64
    }

    /// Every store holds the same set of record ids.
    fn identical(&mut self) -> bool {
        let first = self.engines[0].summary();
        self.engines[1..].iter_mut().all(|e| e.summary() == first)
    }
}
