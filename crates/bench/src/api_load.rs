//! `gossipdir bench api`: the local HTTP API under an open-loop query load while the node
//! gossips a directory of thousands of records.
//!
//! Everything runs in one process on 127.0.0.1:
//! - the target node T: a real [`node::Node`] with its axum API on an ephemeral loopback port;
//! - `--peers` other real nodes, bootstrapped to T, gossiping with it (1 s rounds);
//! - a feeder: a bare libp2p swarm speaking `/gossipdir/sync/1.0.0` with the node crate's own
//!   codec, which holds the owners' keys. It pushes the signed records to T with
//!   [`gossip::Request::Push`], so every record reaches T's store through the network path
//!   (decoded, checked, signature-verified and merged by T's engine, as gossip from any peer).
//!   T then gossips them to the peers. With `--churn` it re-signs that fraction of the records
//!   per second with a higher seq and pushes them in turn to T and to each peer, so T merges
//!   news both from a pushing peer and from real nodes' rumors and reconciliation. The feeder
//!   runs no identify, so the nodes never pick it as a gossip partner;
//! - the load: a hyper HTTP/1.1 client over TCP loopback (a pool of at most `--connections`
//!   keep-alive connections), sending `GET /v1/records?capability=…` on a fixed schedule
//!   (open loop: request i leaves at start + i / rate whether or not earlier ones were
//!   answered). Latency runs from the moment the scheduler releases a request to the last byte
//!   of the answer, so it includes any wait for a free connection; how late the scheduler
//!   released requests is reported apart (scheduler lag: about 1 ms is tokio's timer
//!   granularity, more means the load generator itself was short of CPU), and so is the
//!   latency from each request's scheduled time (lag included).
//!
//! T, the peers with the feeder, and the load generator each run on their own tokio runtime
//! (threads `gd-target`, `gd-peers`, `gd-load`), so the CPU time of each is read apart from
//! `/proc/self/task/*/stat` (Linux).

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use node::event_loop::now_ms;

use anyhow::{Context, anyhow, bail};
use directory::{Keypair, Multiaddr, PeerId, RawRecord, Record};
use futures::StreamExt;
use gossip::wire::{MAX_MESSAGE_BYTES, MESSAGE_OVERHEAD, RECORD_OVERHEAD};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Swarm, noise, tcp, yamux};
use node::codec::{ByteCounters, SYNC_PROTOCOL, SyncCodec};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::{info, warn};

use crate::gossipdir;

/// Records per owner: under the store's cap of 64 per owner.
const PER_OWNER: usize = 50;
/// `skill-NN` capabilities: each held by 1 % of the records.
const RARE_CAPS: usize = 100;
/// `area-N` capabilities: each held by 10 % of the records.
const BROAD_CAPS: usize = 10;
/// Lifetime of the feeder's records (the directory's maximum).
const RECORD_TTL_MS: u64 = 3_600_000;
/// Longest warm-up plus measurement: records are signed once for an hour.
const MAX_RUN: Duration = Duration::from_secs(30 * 60);
/// A query not answered within this long counts as a timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Most measured queries (each keeps a few latency samples in memory).
const MAX_QUERIES: f64 = 10_000_000.0;
/// Most queries in flight; the scheduler drops (and counts) any beyond.
const MAX_IN_FLIGHT: usize = 100_000;
/// How often the feeder re-signs its share of records under `--churn`.
const CHURN_TICK: Duration = Duration::from_millis(100);
/// One answer in this many is parsed in full (every answer's record count is checked).
const PARSE_EVERY: u64 = 100;
/// Worker threads of each runtime.
const TARGET_THREADS: usize = 2;
const PEERS_THREADS: usize = 1;
const LOAD_THREADS: usize = 1;
/// Deadlines of the setup steps.
const MEMBERSHIP_DEADLINE: Duration = Duration::from_secs(30);
const LOAD_DEADLINE: Duration = Duration::from_secs(180);
/// How long T may take, after the load, to hold the newest version of every record.
const LATEST_DEADLINE: Duration = Duration::from_secs(20);

/// Query a node's HTTP API at a fixed rate while it gossips thousands of records.
#[derive(clap::Args, Debug, Clone)]
pub struct ApiArgs {
    /// Signed specialist records in the directory (50 per owner key).
    #[arg(long, default_value_t = 10_000)]
    pub records: usize,
    /// Queries per second, sent on a fixed schedule (open loop).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Measured duration of the load.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Load at the same rate before the measurement starts, not counted.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Fraction of the records re-signed (higher seq) and gossiped per second during the load.
    #[arg(long, default_value_t = 0.01)]
    pub churn: f64,
    /// Real nodes gossiping with the target node (bootstrapped to it).
    #[arg(long, default_value_t = 2)]
    pub peers: usize,
    /// Fraction of the queries by a capability held by 10 % of the records (the others ask
    /// for one held by 1 %).
    #[arg(long, default_value_t = 0.05)]
    pub broad: f64,
    /// Most HTTP/1.1 connections (and queries in flight) of the load generator.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Seed of the owner keys and of the query mix.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

impl Default for ApiArgs {
    fn default() -> Self {
        Self {
            records: 10_000,
            rate: 1000.0,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            churn: 0.01,
            peers: 2,
            broad: 0.05,
            connections: 64,
            seed: 1,
            json: false,
        }
    }
}

/// Latency percentiles in milliseconds (none without answers).
#[derive(Debug, Clone, Serialize, Default)]
pub struct Percentiles {
    pub count: usize,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
}

impl Percentiles {
    fn of(mut micros: Vec<u64>) -> Self {
        micros.sort_unstable();
        let n = micros.len();
        // Nearest rank: the smallest value with at least q of the samples at or below it.
        let at = |q: f64| {
            (n > 0).then(|| {
                let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
                micros[rank - 1] as f64 / 1000.0
            })
        };
        Self {
            count: n,
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: micros.last().map(|m| *m as f64 / 1000.0),
            mean: (n > 0).then(|| micros.iter().sum::<u64>() as f64 / n as f64 / 1000.0),
        }
    }
}

/// Answers to one kind of query.
#[derive(Debug, Clone, Serialize)]
pub struct QueryKind {
    /// e.g. `skill-NN`.
    pub capability: String,
    /// Records each such capability is held by.
    pub matching_records: f64,
    pub answered: u64,
    /// Mean body bytes of an answer.
    pub bytes_per_answer: f64,
    pub latency_ms: Percentiles,
}

/// What the target node did during the measured window.
#[derive(Debug, Clone, Serialize)]
pub struct TargetReport {
    pub peer_id: String,
    pub api: String,
    /// Live records (specialists and node records) at the start and end of the window.
    pub records_start: usize,
    pub records_end: usize,
    pub specialists_start: usize,
    pub specialists_end: usize,
    /// Gossip rounds run during the window.
    pub rounds: u64,
    pub exchanges_started: u64,
    pub exchanges_completed: u64,
    pub exchanges_failed: u64,
    pub pushes_sent: u64,
    /// Records merged into T's store during the window (news from the feeder and the peers).
    pub records_merged: u64,
    /// Sync-protocol bytes during the window.
    pub gossip_bytes_in: u64,
    pub gossip_bytes_out: u64,
    /// Protocol violations T saw (must be 0).
    pub misbehaviour: u64,
    /// After the load: records whose newest version T holds, of all.
    pub latest_held: usize,
    /// How long after the load T took to hold every newest version (none: not within 20 s).
    pub latest_after_ms: Option<f64>,
}

/// The feeder's re-signing during warm-up and window.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ChurnReport {
    pub resigned: u64,
    pub per_sec: f64,
    pub pushes: u64,
    pub push_failures: u64,
}

/// CPU seconds over the measured window, by runtime (Linux `/proc`; none elsewhere).
#[derive(Debug, Clone, Serialize)]
pub struct CpuReport {
    pub window_secs: f64,
    /// The whole process (exited threads included).
    pub process_secs: f64,
    /// T: its event loop (gossip engine, queries) and its API server.
    pub target_secs: f64,
    /// The peer nodes and the feeder.
    pub peers_secs: f64,
    /// The HTTP load generator.
    pub load_secs: f64,
}

/// Everything `gossipdir bench api` measured.
#[derive(Debug, Clone, Serialize)]
pub struct ApiReport {
    pub records: usize,
    pub owners: usize,
    pub peers: usize,
    pub rate: f64,
    pub duration_secs: f64,
    pub warmup_secs: f64,
    pub churn: f64,
    pub broad: f64,
    pub connections: usize,
    pub seed: u64,
    pub interval_ms: u64,
    /// From the first node's start until T and every peer held every record.
    pub setup_secs: f64,
    /// Queries scheduled in the window.
    pub scheduled: u64,
    /// Answered with 200.
    pub answered: u64,
    /// scheduled - answered: non-200, timeouts, transport errors, dropped.
    pub errors: u64,
    pub non_200: u64,
    pub timeouts: u64,
    pub transport_errors: u64,
    /// Not sent because MAX_IN_FLIGHT queries were already waiting.
    pub dropped: u64,
    pub first_error: Option<String>,
    /// 200 answers whose record count (or, when parsed, content) was not the expected one.
    pub wrong_answers: u64,
    /// Answers parsed in full (one in 100) and checked record by record.
    pub parsed: u64,
    /// Answers per second: answered / the longer of the duration and the time from the first
    /// measured query's scheduled time to the last answer (so a node that falls behind and
    /// answers late does not show the target rate).
    pub achieved_rate: f64,
    /// From the release of each query to the last byte of its answer.
    pub latency_ms: Percentiles,
    /// From each query's scheduled time (scheduler lag included) to the last byte.
    pub latency_from_schedule_ms: Percentiles,
    pub bytes_per_answer: f64,
    pub by_kind: Vec<QueryKind>,
    /// How late the scheduler released requests against the schedule.
    pub scheduler_lag_ms: Percentiles,
    pub target: TargetReport,
    /// Specialists each peer held at the end.
    pub peers_specialists_end: Vec<usize>,
    pub churn_done: ChurnReport,
    pub cpu: Option<CpuReport>,
}

impl ApiReport {
    /// Queries that failed or got a wrong answer, and records T lost.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.errors > 0 {
            out.push(format!(
                "{} of {} queries were not answered with 200 (first error: {})",
                self.errors,
                self.scheduled,
                self.first_error.as_deref().unwrap_or("-")
            ));
        }
        if self.wrong_answers > 0 {
            out.push(format!(
                "{} answers did not list the expected records",
                self.wrong_answers
            ));
        }
        if self.target.specialists_end < self.records {
            out.push(format!(
                "the target node ended with {} of {} records",
                self.target.specialists_end, self.records
            ));
        }
        if self.target.latest_held < self.records {
            out.push(format!(
                "the target node held the newest version of {} of {} records 20 s after the load",
                self.target.latest_held, self.records
            ));
        }
        out
    }
}

/// `gossipdir bench api`: runs the load test, prints the report (a table, or JSON with
/// `--json`), fails when a query failed or a record was lost.
pub fn run_api(args: ApiArgs) -> anyhow::Result<()> {
    let report = api_load(&args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", to_table(&report));
    }
    let problems = report.problems();
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    Ok(())
}

/// Runs the whole harness (setup, load, checks) and returns what it measured. Starts its own
/// tokio runtimes: call it outside any runtime.
pub fn api_load(args: &ApiArgs) -> anyhow::Result<ApiReport> {
    check(args)?;
    let population = Arc::new(Population::new(args.records, args.seed));
    let target_rt = runtime("gd-target", TARGET_THREADS)?;
    let peers_rt = runtime("gd-peers", PEERS_THREADS)?;
    let load_rt = runtime("gd-load", LOAD_THREADS)?;
    let result = load_rt.block_on(run(
        args.clone(),
        population,
        target_rt.handle().clone(),
        peers_rt.handle().clone(),
    ));
    // Every node, the feeder and every connection stop with their runtime.
    load_rt.shutdown_timeout(Duration::from_secs(1));
    peers_rt.shutdown_timeout(Duration::from_secs(1));
    target_rt.shutdown_timeout(Duration::from_secs(1));
    result
}

fn check(args: &ApiArgs) -> anyhow::Result<()> {
    if args.records == 0 || args.records > 90_000 {
        bail!("--records: 1 to 90000 (the store holds at most 100000)");
    }
    if !(args.rate > 0.0 && args.rate <= 100_000.0) {
        bail!("--rate: above 0, at most 100000 per second");
    }
    if args.duration.is_zero() || args.duration + args.warmup > MAX_RUN {
        bail!("--duration: above 0, and with --warmup at most {MAX_RUN:?}");
    }
    if args.duration.as_secs_f64() * args.rate > MAX_QUERIES {
        bail!("--rate × --duration: at most {MAX_QUERIES} measured queries");
    }
    if !(0.0..=1.0).contains(&args.churn) {
        bail!("--churn: a fraction from 0 to 1 (per second)");
    }
    if !(0.0..=1.0).contains(&args.broad) {
        bail!("--broad: a fraction from 0 to 1");
    }
    if args.peers == 0 || args.peers > 16 {
        bail!("--peers: 1 to 16");
    }
    if args.connections == 0 || args.connections > 1024 {
        bail!("--connections: 1 to 1024");
    }
    Ok(())
}

fn runtime(name: &str, threads: usize) -> anyhow::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .with_context(|| format!("cannot start the {name} runtime"))
}

// ---- the records -----------------------------------------------------------------------

struct Item {
    owner: usize,
    name: String,
    caps: [String; 2],
}

/// The feeder's owners and records (names and capabilities; versions are kept apart).
struct Population {
    owners: Vec<Keypair>,
    owner_ids: Vec<String>,
    items: Vec<Item>,
    /// Records holding each capability.
    holders: HashMap<String, usize>,
    /// The order records are re-signed in: one record of each owner in turn.
    churn_order: Vec<usize>,
}

impl Population {
    fn new(records: usize, seed: u64) -> Self {
        let owners: Vec<Keypair> = (0..records.div_ceil(PER_OWNER))
            .map(|o| {
                directory::sample::keypair(
                    seed.wrapping_mul(1 << 32)
                        .wrapping_add(0x0a91_0000)
                        .wrapping_add(o as u64),
                )
            })
            .collect();
        let owner_ids = owners
            .iter()
            .map(|k| k.public().to_peer_id().to_string())
            .collect();
        let mut holders = HashMap::new();
        let items: Vec<Item> = (0..records)
            .map(|i| {
                let caps = [
                    format!("skill-{:02}", i % RARE_CAPS),
                    format!("area-{}", (i / RARE_CAPS) % BROAD_CAPS),
                ];
                for c in &caps {
                    *holders.entry(c.clone()).or_insert(0) += 1;
                }
                Item {
                    owner: i / PER_OWNER,
                    name: format!("api-{i:05}"),
                    caps,
                }
            })
            .collect();
        let mut churn_order: Vec<usize> = (0..records).collect();
        churn_order.sort_by_key(|i| (i % PER_OWNER, i / PER_OWNER));
        Self {
            owners,
            owner_ids,
            items,
            holders,
            churn_order,
        }
    }

    fn sign(&self, i: usize, seq: u64, now: u64) -> Record {
        let item = &self.items[i];
        directory::sample::specialist(
            &self.owners[item.owner],
            &item.name,
            &[&item.caps[0], &item.caps[1]],
            seq,
            now,
            RECORD_TTL_MS,
        )
    }

    fn key(&self, i: usize) -> (String, String) {
        let item = &self.items[i];
        (self.owner_ids[item.owner].clone(), item.name.clone())
    }
}

/// Push messages under the wire limit holding `records`.
pub(crate) fn batches<'a>(records: impl Iterator<Item = &'a Record>) -> Vec<Vec<RawRecord>> {
    let budget = MAX_MESSAGE_BYTES - MESSAGE_OVERHEAD;
    let mut out = Vec::new();
    let mut batch = Vec::new();
    let mut used = 0;
    for r in records {
        let size = r.wire_len() + RECORD_OVERHEAD;
        if used + size > budget && !batch.is_empty() {
            out.push(std::mem::take(&mut batch));
            used = 0;
        }
        used += size;
        batch.push(r.to_raw());
    }
    if !batch.is_empty() {
        out.push(batch);
    }
    out
}

// ---- the feeder ------------------------------------------------------------------------

pub(crate) type FeedSwarm = Swarm<request_response::Behaviour<SyncCodec>>;

/// A bare swarm that only sends sync-protocol requests (TCP + noise + yamux, the node's
/// codec at the wire limit), keeping its connections open.
pub(crate) fn feed_swarm(request_timeout: Duration) -> anyhow::Result<FeedSwarm> {
    Ok(libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                SyncCodec::new(MAX_MESSAGE_BYTES, Arc::new(ByteCounters::default())),
                [(SYNC_PROTOCOL, ProtocolSupport::Outbound)],
                request_response::Config::default().with_request_timeout(request_timeout),
            )
        })
        .map_err(|e| anyhow!("feeder behaviour: {e:?}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build())
}

struct FeedCommand {
    to: PeerId,
    request: gossip::Request,
    reply: oneshot::Sender<anyhow::Result<gossip::Response>>,
}

/// A libp2p peer that only sends gossip-protocol requests (pushes of signed records, or any
/// other request a benchmark needs) and hands back the answers.
#[derive(Clone)]
pub(crate) struct Feeder {
    tx: mpsc::Sender<FeedCommand>,
}

impl Feeder {
    /// Builds the swarm and spawns its loop on the current runtime.
    pub(crate) async fn start(
        nodes: Vec<(PeerId, Multiaddr)>,
        request_timeout: Duration,
    ) -> anyhow::Result<Feeder> {
        let mut swarm = feed_swarm(request_timeout)?;
        for (peer, addr) in nodes {
            swarm.add_peer_address(peer, without_p2p(&addr));
        }
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(feed_loop(swarm, rx));
        Ok(Feeder { tx })
    }

    /// Sends `request` to `to` and waits for its answer.
    pub(crate) async fn request(
        &self,
        to: PeerId,
        request: gossip::Request,
    ) -> anyhow::Result<gossip::Response> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(FeedCommand { to, request, reply })
            .await
            .map_err(|_| anyhow!("the feeder stopped"))?;
        rx.await.map_err(|_| anyhow!("the feeder stopped"))?
    }

    /// Pushes `records` to `to`; returns how many were new to it (its `PushAck`).
    async fn push(&self, to: PeerId, records: Vec<RawRecord>) -> anyhow::Result<u32> {
        match self.request(to, gossip::Request::Push(records)).await? {
            gossip::Response::PushAck(new) => Ok(new),
            other => Err(anyhow!("unexpected answer to a push: {other:?}")),
        }
    }
}

async fn feed_loop(mut swarm: FeedSwarm, mut commands: mpsc::Receiver<FeedCommand>) {
    let mut pending: HashMap<OutboundRequestId, oneshot::Sender<_>> = HashMap::new();
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(FeedCommand { to, request, reply }) => {
                    let id = swarm.behaviour_mut().send_request(&to, request);
                    pending.insert(id, reply);
                }
                None => break,
            },
            event = swarm.select_next_some() => match event {
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Response { request_id, response },
                    ..
                }) => {
                    if let Some(reply) = pending.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                    request_id,
                    error,
                    peer,
                    ..
                }) => {
                    if let Some(reply) = pending.remove(&request_id) {
                        let _ = reply.send(Err(anyhow!("request to {peer} failed: {error}")));
                    }
                }
                _ => {}
            },
        }
    }
}

fn without_p2p(addr: &Multiaddr) -> Multiaddr {
    let mut a = addr.clone();
    if matches!(a.iter().last(), Some(Protocol::P2p(_))) {
        a.pop();
    }
    a
}

/// Newest seq of every specialist a node holds, by (owner, name).
async fn held_versions(client: &node::Client) -> anyhow::Result<HashMap<(String, String), u64>> {
    let records = client.query(Vec::new()).await.context("a node stopped")?;
    Ok(records
        .into_iter()
        .map(|r| ((r.owner, r.name), r.seq))
        .collect())
}

/// Records among `indices` of which `held` lacks the version `seqs` says.
fn missing(
    population: &Population,
    seqs: &[u64],
    held: &HashMap<(String, String), u64>,
    indices: impl Iterator<Item = usize>,
) -> Vec<usize> {
    indices
        .filter(|i| held.get(&population.key(*i)).is_none_or(|s| *s < seqs[*i]))
        .collect()
}

/// Pushes every record to the target until its store holds them all (re-pushing any it did
/// not keep, e.g. past a per-round cap).
async fn load_target(
    feeder: &Feeder,
    target: &node::Node,
    population: &Population,
    records: &[Record],
    seqs: &[u64],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + LOAD_DEADLINE;
    let mut pending: Vec<usize> = (0..records.len()).collect();
    loop {
        let mut acked = 0u64;
        for batch in batches(pending.iter().map(|i| &records[*i])) {
            acked += u64::from(feeder.push(target.peer_id, batch).await?);
        }
        info!(
            pushed = pending.len(),
            acked, "records pushed to the target node"
        );
        let mut best = 0;
        let mut progress_at = Instant::now();
        loop {
            let s = target.client.status().await.context("the target stopped")?;
            if s.specialists >= records.len() {
                return Ok(());
            }
            if s.specialists > best {
                best = s.specialists;
                progress_at = Instant::now();
            }
            if Instant::now() > deadline {
                bail!(
                    "the target node held {} of {} records after {LOAD_DEADLINE:?}",
                    s.specialists,
                    records.len()
                );
            }
            if progress_at.elapsed() > Duration::from_secs(2) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let held = held_versions(&target.client).await?;
        pending = missing(population, seqs, &held, 0..records.len());
        warn!(
            missing = pending.len(),
            "re-pushing records the target node did not keep"
        );
    }
}

/// Waits until every node holds every record (and T knows every peer).
async fn wait_all_hold(nodes: &[&node::Node], records: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + LOAD_DEADLINE;
    loop {
        let mut least = usize::MAX;
        for n in nodes {
            let s = n.client.status().await.context("a node stopped")?;
            least = least.min(s.specialists);
        }
        if least >= records {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("a peer held {least} of {records} records after {LOAD_DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Re-signs `churn` of the records per second with a higher seq and pushes them, in turn, to
/// each node of `to`, until `stop`; returns what it did and the final seqs.
async fn churn_loop(
    feeder: Feeder,
    population: Arc<Population>,
    mut seqs: Vec<u64>,
    churn: f64,
    to: Vec<PeerId>,
    mut stop: oneshot::Receiver<()>,
) -> (ChurnReport, Vec<u64>) {
    let mut report = ChurnReport::default();
    let n = seqs.len();
    let per_sec = churn * n as f64;
    let started = Instant::now();
    let mut ticker = tokio::time::interval(CHURN_TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut owed = 0.0;
    let mut cursor = 0usize;
    let mut turn = 0usize;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = ticker.tick() => {}
        }
        owed += per_sec * CHURN_TICK.as_secs_f64();
        let k = owed.floor() as usize;
        owed -= k as f64;
        if k == 0 || n == 0 || to.is_empty() {
            continue;
        }
        let now = now_ms();
        let mut fresh = Vec::with_capacity(k);
        for _ in 0..k {
            let i = population.churn_order[cursor % n];
            cursor += 1;
            seqs[i] += 1;
            fresh.push(population.sign(i, seqs[i], now));
        }
        let peer = to[turn % to.len()];
        turn += 1;
        for batch in batches(fresh.iter()) {
            match feeder.push(peer, batch).await {
                Ok(_) => report.pushes += 1,
                Err(e) => {
                    report.push_failures += 1;
                    warn!("churn push failed: {e:#}");
                }
            }
        }
        report.resigned += k as u64;
    }
    report.per_sec = report.resigned as f64 / started.elapsed().as_secs_f64().max(1e-9);
    (report, seqs)
}

// ---- the load ----------------------------------------------------------------------------

struct Query {
    uri: hyper::Uri,
    capability: String,
    broad: bool,
    expected: usize,
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    from_schedule_us: Vec<u64>,
    rare_us: Vec<u64>,
    broad_us: Vec<u64>,
    lag_us: Vec<u64>,
    scheduled: u64,
    answered: u64,
    non_200: u64,
    timeouts: u64,
    transport_errors: u64,
    dropped: u64,
    wrong_answers: u64,
    parsed: u64,
    bytes: u64,
    rare_bytes: u64,
    broad_bytes: u64,
    first_error: Option<String>,
    /// When the last measured answer arrived.
    last_answer: Option<tokio::time::Instant>,
}

impl Tally {
    fn error(&mut self, message: String) {
        if self.first_error.is_none() {
            self.first_error = Some(message);
        }
    }
}

type Http = HttpClient<HttpConnector, Empty<Bytes>>;

struct Load {
    http: Http,
    queries: Vec<Query>,
    rare: Vec<usize>,
    broad: Vec<usize>,
    broad_fraction: f64,
    rate: f64,
    warmup: u64,
    measured: u64,
    seed: u64,
    permits: Semaphore,
    in_flight: AtomicUsize,
    tally: Mutex<Tally>,
}

impl Load {
    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        // A poisoned lock only means a query task panicked; its counts are still good.
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Sends the scheduled queries (warm-up, then the measured ones), each at its time, without
/// waiting for answers; returns once the last one has been released.
async fn drive(load: Arc<Load>, start: tokio::time::Instant) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(load.seed);
    for i in 0..load.warmup + load.measured {
        let at = start + Duration::from_secs_f64(i as f64 / load.rate);
        tokio::time::sleep_until(at).await;
        let released = tokio::time::Instant::now();
        let measured = i >= load.warmup;
        let pick_broad =
            !load.broad.is_empty() && (load.rare.is_empty() || rng.gen_bool(load.broad_fraction));
        let list = if pick_broad { &load.broad } else { &load.rare };
        let q = list[rng.gen_range(0..list.len())];
        if measured {
            let mut t = load.tally();
            t.scheduled += 1;
            t.lag_us
                .push(released.duration_since(at).as_micros() as u64);
        }
        if load.in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
            if measured {
                let mut t = load.tally();
                t.dropped += 1;
                t.error(format!("{MAX_IN_FLIGHT} queries already in flight"));
            }
            continue;
        }
        load.in_flight.fetch_add(1, Ordering::Relaxed);
        let load = load.clone();
        tokio::spawn(async move {
            let outcome = tokio::time::timeout(REQUEST_TIMEOUT, query(&load, q)).await;
            let took = released.elapsed().as_micros() as u64;
            let late = at.elapsed().as_micros() as u64;
            if measured {
                record(&load, q, (took, late), outcome, i);
            }
            load.in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// One query: a free connection, the request, the whole body.
async fn query(load: &Load, q: usize) -> Result<(hyper::StatusCode, Bytes), String> {
    let _permit = load
        .permits
        .acquire()
        .await
        .map_err(|e| format!("no connection: {e}"))?;
    let response = load
        .http
        .get(load.queries[q].uri.clone())
        .await
        .map_err(|e| format!("request: {e:?}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok((status, body))
}

type Outcome = Result<Result<(hyper::StatusCode, Bytes), String>, tokio::time::error::Elapsed>;

/// Tallies one measured query, answered `took_us` after its release and `late_us` after its
/// scheduled time.
fn record(load: &Load, q: usize, (took_us, late_us): (u64, u64), outcome: Outcome, i: u64) {
    let query = &load.queries[q];
    let (status, body) = match outcome {
        Err(_) => {
            let mut t = load.tally();
            t.timeouts += 1;
            t.error(format!("no answer within {REQUEST_TIMEOUT:?}"));
            return;
        }
        Ok(Err(e)) => {
            let mut t = load.tally();
            t.transport_errors += 1;
            t.error(e);
            return;
        }
        Ok(Ok(answer)) => answer,
    };
    if status != hyper::StatusCode::OK {
        let mut t = load.tally();
        t.non_200 += 1;
        t.error(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ));
        return;
    }
    // Every answer: one `"owner":` key per record (a string value holding it would be escaped).
    let mut right = count(&body, b"\"owner\":") == query.expected;
    let parse = i.is_multiple_of(PARSE_EVERY);
    if parse {
        right &= match serde_json::from_slice::<Vec<node::RecordView>>(&body) {
            Ok(records) => {
                records.len() == query.expected
                    && records
                        .iter()
                        .all(|r| r.capabilities.contains(&query.capability))
            }
            Err(_) => false,
        };
    }
    let mut t = load.tally();
    t.answered += 1;
    let now = tokio::time::Instant::now();
    t.last_answer = Some(t.last_answer.map_or(now, |l| l.max(now)));
    t.parsed += u64::from(parse);
    t.wrong_answers += u64::from(!right);
    t.bytes += body.len() as u64;
    t.latencies_us.push(took_us);
    t.from_schedule_us.push(late_us);
    if query.broad {
        t.broad_us.push(took_us);
        t.broad_bytes += body.len() as u64;
    } else {
        t.rare_us.push(took_us);
        t.rare_bytes += body.len() as u64;
    }
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

// ---- observing the target ------------------------------------------------------------------

struct Observation {
    at: Instant,
    status: node::Status,
    metrics: String,
    cpu: Option<Cpu>,
}

async fn observe(target: &node::Node) -> anyhow::Result<Observation> {
    let cpu = Cpu::read();
    let at = Instant::now();
    let status = target.client.status().await.context("the target stopped")?;
    let metrics = target
        .client
        .metrics()
        .await
        .context("the target stopped")?;
    Ok(Observation {
        at,
        status,
        metrics,
        cpu,
    })
}

/// Sum of a Prometheus counter's samples (all label sets).
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            if !(rest.starts_with(' ') || rest.starts_with('{')) {
                return None;
            }
            l.rsplit_once(' ')?.1.trim().parse::<f64>().ok()
        })
        .sum::<f64>() as u64
}

/// CPU seconds of the process and of each runtime's threads, from `/proc` (Linux).
#[derive(Debug, Clone, Default)]
struct Cpu {
    process: f64,
    by_thread: BTreeMap<String, f64>,
}

/// `/proc/.../stat` counts in clock ticks of 1/100 s (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

impl Cpu {
    fn read() -> Option<Cpu> {
        let process = stat_cpu(&std::fs::read_to_string("/proc/self/stat").ok()?)?.1;
        let mut by_thread = BTreeMap::new();
        for entry in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
            let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            if let Some((comm, secs)) = stat_cpu(&text) {
                *by_thread.entry(comm).or_insert(0.0) += secs;
            }
        }
        Some(Cpu { process, by_thread })
    }

    fn of(&self, prefix: &str) -> f64 {
        self.by_thread
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    }
}

/// (comm, utime + stime in seconds) from a `stat` line.
fn stat_cpu(text: &str) -> Option<(String, f64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // Fields after the comm start at field 3 (state); utime and stime are fields 14 and 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((comm, (utime + stime) / TICKS_PER_SEC))
}

// ---- the run -------------------------------------------------------------------------------

async fn run(
    args: ApiArgs,
    population: Arc<Population>,
    target_rt: Handle,
    peers_rt: Handle,
) -> anyhow::Result<ApiReport> {
    let setup_started = Instant::now();
    let n = args.records;
    info!(
        records = n,
        owners = population.owners.len(),
        "signing the records"
    );
    let now = now_ms();
    let seqs = vec![1u64; n];
    let records: Vec<Record> = (0..n).map(|i| population.sign(i, 1, now)).collect();

    let mut config = gossipdir::config(args.seed, 0, Vec::new());
    config.api = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    let (target, target_addr) = target_rt
        .spawn(gossipdir::spawn(config))
        .await
        .context("the target node's start panicked")?
        .context("starting the target node")?;
    let api = target
        .api_addr
        .context("the target node has no API address")?;
    info!(%api, peer = %target.peer_id, "target node up");
    let mut peers = Vec::with_capacity(args.peers);
    let mut addrs = vec![(target.peer_id, target_addr.clone())];
    for i in 1..=args.peers {
        let config = gossipdir::config(args.seed, i, vec![target_addr.clone()]);
        let (peer, addr) = peers_rt
            .spawn(gossipdir::spawn(config))
            .await
            .context("a peer node's start panicked")?
            .with_context(|| format!("starting peer node {i}"))?;
        addrs.push((peer.peer_id, addr));
        peers.push(peer);
    }
    let mut all: Vec<&node::Node> = vec![&target];
    all.extend(peers.iter());
    let membership_deadline = Instant::now() + MEMBERSHIP_DEADLINE;
    loop {
        let mut least = usize::MAX;
        for node in &all {
            least = least.min(node.client.status().await.context("a node stopped")?.nodes);
        }
        if least > args.peers {
            break;
        }
        if Instant::now() > membership_deadline {
            bail!("the nodes did not all know each other within {MEMBERSHIP_DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let feeder = peers_rt
        .spawn(Feeder::start(addrs.clone(), Duration::from_secs(30)))
        .await
        .context("the feeder's start panicked")??;
    load_target(&feeder, &target, &population, &records, &seqs).await?;
    drop(records);
    info!("the target holds every record; waiting for the peers");
    wait_all_hold(&all, n).await?;
    let setup_secs = setup_started.elapsed().as_secs_f64();
    info!(setup_secs, "every node holds every record");

    // Churn, from the warm-up on.
    let (stop_churn, stop) = oneshot::channel();
    let churn = peers_rt.spawn(churn_loop(
        feeder.clone(),
        population.clone(),
        seqs,
        args.churn,
        addrs.iter().map(|(p, _)| *p).collect(),
        stop,
    ));

    // The load.
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let http: Http = HttpClient::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.connections)
        .pool_idle_timeout(Duration::from_secs(60))
        .build(http);
    let mut queries = Vec::new();
    let mut rare = Vec::new();
    let mut broad = Vec::new();
    for (caps, broad_kind) in [(RARE_CAPS, false), (BROAD_CAPS, true)] {
        for c in 0..caps {
            let capability = if broad_kind {
                format!("area-{c}")
            } else {
                format!("skill-{c:02}")
            };
            let Some(expected) = population.holders.get(&capability).copied() else {
                continue;
            };
            let uri: hyper::Uri = format!("http://{api}/v1/records?capability={capability}")
                .parse()
                .context("query URI")?;
            if broad_kind { &mut broad } else { &mut rare }.push(queries.len());
            queries.push(Query {
                uri,
                capability,
                broad: broad_kind,
                expected,
            });
        }
    }
    let warmup = (args.warmup.as_secs_f64() * args.rate).round() as u64;
    let measured = (args.duration.as_secs_f64() * args.rate).round().max(1.0) as u64;
    let load = Arc::new(Load {
        http,
        queries,
        rare,
        broad,
        broad_fraction: args.broad,
        rate: args.rate,
        warmup,
        measured,
        seed: args.seed,
        permits: Semaphore::new(args.connections),
        in_flight: AtomicUsize::new(0),
        tally: Mutex::new(Tally::default()),
    });
    info!(
        rate = args.rate,
        warmup = ?args.warmup,
        duration = ?args.duration,
        "load starting"
    );
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let driver = tokio::spawn(drive(load.clone(), start));
    let window_start = start + Duration::from_secs_f64(warmup as f64 / args.rate);
    tokio::time::sleep_until(window_start).await;
    let before = observe(&target).await?;
    driver.await.context("the load generator panicked")?;
    let drain_deadline = Instant::now() + REQUEST_TIMEOUT + Duration::from_secs(1);
    while load.in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let after = observe(&target).await?;
    let load_ended = Instant::now();
    let _ = stop_churn.send(());
    let (churn_done, seqs) = churn.await.context("the churn task panicked")?;
    info!(
        resigned = churn_done.resigned,
        "load done; checking versions"
    );

    // Does T hold the newest version of every record?
    let mut latest_held;
    let mut latest_after_ms = None;
    loop {
        let held = held_versions(&target.client).await?;
        latest_held = n - missing(&population, &seqs, &held, 0..n).len();
        if latest_held == n {
            latest_after_ms = Some(load_ended.elapsed().as_secs_f64() * 1000.0);
            break;
        }
        if load_ended.elapsed() > LATEST_DEADLINE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut peers_specialists_end = Vec::new();
    for p in &peers {
        peers_specialists_end.push(
            p.client
                .status()
                .await
                .context("a peer stopped")?
                .specialists,
        );
    }

    let tally = std::mem::take(&mut *load.tally());
    let delta =
        |name: &str| metric(&after.metrics, name).saturating_sub(metric(&before.metrics, name));
    let window_secs = after.at.duration_since(before.at).as_secs_f64();
    let cpu = match (&before.cpu, &after.cpu) {
        (Some(b), Some(a)) => Some(CpuReport {
            window_secs,
            process_secs: a.process - b.process,
            target_secs: a.of("gd-target") - b.of("gd-target"),
            peers_secs: a.of("gd-peers") - b.of("gd-peers"),
            load_secs: a.of("gd-load") - b.of("gd-load"),
        }),
        _ => None,
    };
    let kind = |broad: bool, us: Vec<u64>, bytes: u64| {
        let list = if broad { &load.broad } else { &load.rare };
        let holders: usize = list.iter().map(|q| load.queries[*q].expected).sum();
        QueryKind {
            capability: if broad { "area-N" } else { "skill-NN" }.to_owned(),
            matching_records: holders as f64 / list.len().max(1) as f64,
            answered: us.len() as u64,
            bytes_per_answer: bytes as f64 / us.len().max(1) as f64,
            latency_ms: Percentiles::of(us),
        }
    };
    let by_kind = vec![
        kind(false, tally.rare_us, tally.rare_bytes),
        kind(true, tally.broad_us, tally.broad_bytes),
    ];
    let answered = tally.answered;
    let answering_secs = tally
        .last_answer
        .map_or(0.0, |l| l.duration_since(window_start).as_secs_f64())
        .max(args.duration.as_secs_f64());
    let report = ApiReport {
        records: n,
        owners: population.owners.len(),
        peers: args.peers,
        rate: args.rate,
        duration_secs: args.duration.as_secs_f64(),
        warmup_secs: args.warmup.as_secs_f64(),
        churn: args.churn,
        broad: args.broad,
        connections: args.connections,
        seed: args.seed,
        interval_ms: node::config::DEFAULT_INTERVAL.as_millis() as u64,
        setup_secs,
        scheduled: tally.scheduled,
        answered,
        errors: tally.scheduled - answered,
        non_200: tally.non_200,
        timeouts: tally.timeouts,
        transport_errors: tally.transport_errors,
        dropped: tally.dropped,
        first_error: tally.first_error,
        wrong_answers: tally.wrong_answers,
        parsed: tally.parsed,
        achieved_rate: answered as f64 / answering_secs,
        latency_ms: Percentiles::of(tally.latencies_us),
        latency_from_schedule_ms: Percentiles::of(tally.from_schedule_us),
        bytes_per_answer: tally.bytes as f64 / answered.max(1) as f64,
        by_kind,
        scheduler_lag_ms: Percentiles::of(tally.lag_us),
        target: TargetReport {
            peer_id: target.peer_id.to_string(),
            api: api.to_string(),
            records_start: before.status.records,
            records_end: after.status.records,
            specialists_start: before.status.specialists,
            specialists_end: after.status.specialists,
            rounds: after.status.round - before.status.round,
            exchanges_started: delta("gossipdir_exchanges_started_total"),
            exchanges_completed: delta("gossipdir_exchanges_completed_total"),
            exchanges_failed: delta("gossipdir_exchanges_failed_total"),
            pushes_sent: delta("gossipdir_pushes_total"),
            records_merged: delta("gossipdir_merges_total"),
            gossip_bytes_in: after.status.gossip_bytes.received
                - before.status.gossip_bytes.received,
            gossip_bytes_out: after.status.gossip_bytes.sent - before.status.gossip_bytes.sent,
            misbehaviour: metric(&after.metrics, "gossipdir_misbehaviour_total"),
            latest_held,
            latest_after_ms,
        },
        peers_specialists_end,
        churn_done,
        cpu,
    };
    for node in peers {
        node.abort();
    }
    target.abort();
    Ok(report)
}

// ---- the table -----------------------------------------------------------------------------

fn ms(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.2}"))
}

fn percentiles(p: &Percentiles) -> String {
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {}",
        ms(p.p50),
        ms(p.p90),
        ms(p.p99),
        ms(p.p999),
        ms(p.max),
        ms(p.mean)
    )
}

/// The report for a person.
pub fn to_table(r: &ApiReport) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<22}{v}\n"));
    line(
        "setup",
        format!(
            "{} records of {} owners pushed to T by the feeder, gossiped to {} peer node(s); {:.1} s; rounds of {} ms",
            r.records, r.owners, r.peers, r.setup_secs, r.interval_ms
        ),
    );
    line(
        "load",
        format!(
            "{} q/s open loop for {} s after {} s of warm-up; {:.0} % by a capability of 10 % of the records, the rest of 1 %; at most {} connections",
            r.rate,
            r.duration_secs,
            r.warmup_secs,
            r.broad * 100.0,
            r.connections
        ),
    );
    line(
        "queries",
        format!(
            "{} scheduled, {} answered (200), {} errors ({} non-200, {} timeouts, {} transport, {} dropped)",
            r.scheduled, r.answered, r.errors, r.non_200, r.timeouts, r.transport_errors, r.dropped
        ),
    );
    if let Some(e) = &r.first_error {
        line("first error", e.clone());
    }
    line(
        "answers checked",
        format!(
            "{} wrong of {} (record count of every answer; {} parsed in full)",
            r.wrong_answers, r.answered, r.parsed
        ),
    );
    line("achieved rate", format!("{:.1} answers/s", r.achieved_rate));
    line("latency ms", percentiles(&r.latency_ms));
    for k in &r.by_kind {
        line(
            &format!("  {} ({:.0} rec)", k.capability, k.matching_records),
            format!(
                "{} answers of {:.0} B; {}",
                k.answered,
                k.bytes_per_answer,
                percentiles(&k.latency_ms)
            ),
        );
    }
    line(
        "bytes per answer",
        format!("{:.0} (mean)", r.bytes_per_answer),
    );
    line("scheduler lag ms", percentiles(&r.scheduler_lag_ms));
    line("from schedule ms", percentiles(&r.latency_from_schedule_ms));
    let t = &r.target;
    line(
        "target records",
        format!(
            "start {} ({} specialists), end {} ({} specialists)",
            t.records_start, t.specialists_start, t.records_end, t.specialists_end
        ),
    );
    line(
        "newest versions",
        format!(
            "{} of {} held by T {}",
            t.latest_held,
            r.records,
            t.latest_after_ms
                .map_or("20 s after the load".to_owned(), |m| format!(
                    "{m:.0} ms after the load"
                ))
        ),
    );
    line(
        "target gossip",
        format!(
            "{} rounds, {} exchanges started ({} completed, {} failed), {} pushes, {} records merged, {} B in, {} B out, {} misbehaviour",
            t.rounds,
            t.exchanges_started,
            t.exchanges_completed,
            t.exchanges_failed,
            t.pushes_sent,
            t.records_merged,
            t.gossip_bytes_in,
            t.gossip_bytes_out,
            t.misbehaviour
        ),
    );
    line(
        "churn",
        format!(
            "{} records re-signed ({:.1}/s), {} pushes, {} failed",
            r.churn_done.resigned,
            r.churn_done.per_sec,
            r.churn_done.pushes,
            r.churn_done.push_failures
        ),
    );
    line(
        "peers at the end",
        r.peers_specialists_end
            .iter()
            .map(|s| format!("{s} specialists"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    match &r.cpu {
        Some(c) => line(
            "cpu s",
            format!(
                "over {:.1} s: process {:.2} ({:.0} % of one core): target {:.2}, peers+feeder {:.2}, load generator {:.2}",
                c.window_secs,
                c.process_secs,
                c.process_secs / c.window_secs.max(1e-9) * 100.0,
                c.target_secs,
                c.peers_secs,
                c.load_secs
            ),
        ),
        None => line("cpu s", "not measured (no /proc)".to_owned()),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let p = Percentiles::of((1..=1000).map(|v| v * 1000).collect());
        assert_eq!(p.p50, Some(500.0));
        assert_eq!(p.p99, Some(990.0));
        assert_eq!(p.p999, Some(999.0));
        assert_eq!(p.max, Some(1000.0));
        assert_eq!(Percentiles::of(Vec::new()).p50, None);
    }

    #[test]
    fn batches_stay_under_the_message_limit_and_keep_every_record() {
        let population = Population::new(3000, 1);
        let records: Vec<Record> = (0..3000).map(|i| population.sign(i, 1, 1_000)).collect();
        let batches = batches(records.iter());
        assert!(batches.len() > 1);
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 3000);
        for b in &batches {
            let bytes = gossip::wire::encode(&gossip::Request::Push(b.clone()));
            assert!(bytes.len() <= MAX_MESSAGE_BYTES, "{} bytes", bytes.len());
        }
        // 1 % and 10 % of the records per capability, at most 64 records per owner.
        assert_eq!(population.holders["skill-07"], 30);
        assert_eq!(population.holders["area-3"], 300);
        assert_eq!(population.owners.len(), 60);
    }

    #[test]
    fn stat_lines_parse() {
        let line = "123 (gd-target (x)) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0";
        assert_eq!(stat_cpu(line), Some(("gd-target (x)".to_owned(), 3.0)));
        assert_eq!(
            metric(
                "# x\ngossipdir_rounds_total 7\ngossipdir_rounds_totalx 1\nm{a=\"b\"} 2\nm{a=\"c\"} 3\n",
                "m"
            ),
            5
        );
    }
}
