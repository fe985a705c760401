//! `gossipdir bench compare` (issue 6, "side by side, in one run"): gossipdir next to what a
//! user would otherwise pick, on the same machine in one process run.
//!
//! 1. **Full view** ([`fullview`]): bytes per node per round of the founding design (each side
//!    of every exchange ships its whole directory) against ours, at 1,000 and 10,000 real
//!    signed records, steady and under 1 % churn per round, with the minimum.
//! 2. **chitchat** ([`chitchat_net`]): N chitchat instances on chitchat's own UDP transport
//!    against N real gossipdir nodes ([`crate::gossipdir`], driven by the `bench latency`
//!    harness) on the same N, interval, seed peers, origins and value size: rounds (gossip
//!    intervals) and wall time until a new key / record is on every node, and the bytes each
//!    node received for it.
//! 3. **gossipsub**: the `bench latency` harness ([`crate::gossipsub`]): time and bytes for an
//!    announcement to reach N nodes, and a late joiner (gossipsub: none of the earlier
//!    messages; gossipdir: the whole directory).
//!
//! Method of every real-network trial (the `bench latency` method, applied to chitchat too):
//! an idle window of `--window-ms`, then the new key / record on a seeded random origin; the
//! trial's window runs until every node holds it plus 1 s, at least `--window-ms`. Bytes per
//! node for it = mean over nodes of the bytes received in the trial window, minus the idle
//! rate of the window just before times the trial window's length; medians over trials.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::distributions::Alphanumeric;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::chitchat_net;
use crate::compare_plot::{Series, color, line_chart};
use crate::fullview::{self, FullViewRow, FullViewSettings};
use crate::latency::{self, LatencyArgs, Sample, SystemReport, median};

/// Measure gossipdir side by side with the full-view design, chitchat and gossipsub.
#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    /// Network sizes N of parts 2 and 3, comma separated.
    /// The default stops at 50 to keep the run near 3 minutes on 2 cores (gossipdir at N = 100
    /// alone takes 2.5–5 minutes there today); add it with `--nodes 10,50,100`.
    #[arg(long, value_delimiter = ',', default_value = "10,50")]
    pub nodes: Vec<usize>,
    /// New keys / records per size and system.
    #[arg(long, default_value_t = 3)]
    pub trials: u32,
    /// Gossip interval of gossipdir and chitchat, in ms (gossipsub's heartbeat stays 1 s).
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// Node i is bootstrapped to (gossipdir) / seeded with (chitchat) / dials (gossipsub) this
    /// many random earlier nodes.
    #[arg(long, default_value_t = 6)]
    pub degree: usize,
    /// Seed of the topology, the origins, the values and the engines.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Idle window before each trial, and the shortest trial window.
    #[arg(long, default_value_t = 2000)]
    pub window_ms: u64,
    /// A trial not converged within this long counts as not converged.
    #[arg(long, default_value_t = 30)]
    pub trial_deadline_secs: u64,
    /// Deadline of each setup (membership, meshes).
    #[arg(long, default_value_t = 120)]
    pub setup_deadline_secs: u64,
    /// How long gossipsub's late subscriber listens for the earlier messages.
    #[arg(long, default_value_t = 2000)]
    pub late_listen_ms: u64,
    /// Directory sizes of part 1 (full view against ours), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub records: Vec<u64>,
    /// Engines of part 1's in-memory network.
    #[arg(long, default_value_t = 16)]
    pub fullview_nodes: usize,
    /// Fraction of the records refreshed per round in part 1's churn phase.
    #[arg(long, default_value_t = 0.01)]
    pub churn: f64,
    /// Churn rounds measured in part 1 (after 3 rounds of warm-up).
    #[arg(long, default_value_t = 10)]
    pub churn_rounds: u32,
    /// Parts to run: fullview, gossipdir, chitchat, gossipsub.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "fullview,gossipdir,chitchat,gossipsub"
    )]
    pub systems: Vec<String>,
    /// Print the JSON report on stdout (the tables then go to stderr).
    #[arg(long)]
    pub json: bool,
    /// Write SVG plots (rounds and bytes against N; part 1's bytes against records) here.
    #[arg(long)]
    pub svg_dir: Option<PathBuf>,
}

impl CompareArgs {
    /// The defaults, as the command line gives them.
    pub fn defaults() -> Self {
        <Self as clap::FromArgMatches>::from_arg_matches(
            &<Self as clap::Args>::augment_args(clap::Command::new("compare"))
                .get_matches_from(["compare"]),
        )
        .expect("the defaults parse")
    }

    fn wants(&self, system: &str) -> bool {
        self.systems.iter().any(|s| s == system)
    }

    fn latency_args(&self) -> LatencyArgs {
        LatencyArgs {
            nodes: self.nodes.clone(),
            trials: self.trials,
            json: false,
            loss: 0.0,
            seed: self.seed,
            degree: self.degree,
            window_ms: self.window_ms,
            trial_deadline_secs: self.trial_deadline_secs,
            setup_deadline_secs: self.setup_deadline_secs,
            late_listen_ms: self.late_listen_ms,
            systems: vec!["gossipdir".into(), "gossipsub".into()],
            interval_ms: self.interval_ms,
        }
    }
}

/// One chitchat trial.
#[derive(Debug, Clone, Serialize)]
pub struct CcTrial {
    pub origin: usize,
    pub converged: bool,
    pub latency_ms: f64,
    pub median_arrival_ms: f64,
    pub window_ms: f64,
    /// Mean over nodes of the UDP payload bytes received in the window (gross).
    pub bytes_in_mean: f64,
    /// The idle window just before, per node per second.
    pub idle_bytes_per_sec: f64,
}

/// chitchat at one N.
#[derive(Debug, Clone, Serialize)]
pub struct ChitchatReport {
    pub nodes: usize,
    pub setup_secs: f64,
    pub value_bytes: usize,
    pub trials: Vec<CcTrial>,
    pub converged: usize,
    pub latency_ms_median: Option<f64>,
    pub latency_ms_max: Option<f64>,
    /// Per node per key, medians over trials, idle subtracted.
    pub net_bytes_in: f64,
    pub idle_bytes_per_node_per_sec: f64,
}

/// One system at one N, as the tables and plots show it.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub system: &'static str,
    pub nodes: usize,
    pub trials: usize,
    pub converged: usize,
    pub latency_ms_median: Option<f64>,
    pub latency_ms_max: Option<f64>,
    /// Latency in gossip intervals (gossipdir, chitchat: `--interval-ms`; gossipsub: its 1 s
    /// heartbeat).
    pub rounds_median: Option<f64>,
    pub rounds_max: Option<f64>,
    /// Per node per new key / record, idle subtracted: the system's own payload where it can
    /// be counted apart (gossipdir: sync codec bytes; chitchat: UDP payload), else libp2p
    /// substream bytes (gossipsub).
    pub bytes_per_node: f64,
    pub bytes_counted: &'static str,
    /// gossipdir only: libp2p substream bytes, as gossipsub's are counted.
    pub transport_bytes_per_node: Option<f64>,
    /// Per node per second with nothing new, in the same unit as `bytes_per_node`.
    pub idle_bytes_per_node_per_sec: f64,
    /// Median over trials of the bytes received per node in the trial window, idle included
    /// (same unit as `bytes_per_node`), and of the window's length.
    pub gross_bytes_per_node: f64,
    pub window_secs: f64,
    pub setup_secs: f64,
}

#[derive(Debug, Serialize)]
pub struct CompareReport {
    pub settings: BTreeMap<&'static str, serde_json::Value>,
    pub record_bytes: usize,
    pub full_view: Vec<FullViewRow>,
    pub rows: Vec<Row>,
    pub gossipdir: Vec<SystemReport>,
    pub gossipsub: Vec<SystemReport>,
    pub chitchat: Vec<ChitchatReport>,
    pub unfair: Vec<&'static str>,
    pub total_secs: f64,
}

/// Differences of setting between the systems that the numbers carry.
pub const UNFAIR: &[&str] = &[
    "transport: gossipdir and gossipsub run libp2p TCP + noise + yamux (encrypted, authenticated, multiplexed streams); chitchat runs plain UDP datagrams (no encryption, no authentication, no retransmission) on 127.0.0.1",
    "bytes: gossipdir = its sync codec payload (CBOR messages, no libp2p framing; libp2p substream bytes also given); chitchat = UDP payload (its header, digest, delta; no UDP/IP header); gossipsub = libp2p substream bytes (protobuf RPCs incl. heartbeat control, multistream-select), its payload alone cannot be counted apart",
    "payload: gossipdir gossips a signed record (ed25519 owner signature, checked by every receiver, about 350 bytes); chitchat a key/value of the same length (random alphanumerics, so its zstd compression gains little), unsigned, owned by the node that sets it; gossipsub the same 350 record bytes as an opaque message, signed by the publishing peer",
    "fanout: gossipdir exchanges with 2 peers per round and pushes news at once (1 push + ids to ⌈ln N⌉ + 3 peers); chitchat gossips with 3 live peers per round (its fixed GOSSIP_COUNT) plus sometimes a seed node and a dead node, and never pushes; gossipsub forwards every message at once to its mesh (D = 6)",
    "interval: gossipdir and chitchat use the same --interval-ms; gossipsub's heartbeat stays at its 1 s default (its eager mesh push does not wait for it); rounds are latency / interval for all three",
    "membership: chitchat's digest lists every node (heartbeats and versions), so its idle traffic grows with N; gossipdir's idle traffic is the 30-byte summaries of in-sync exchanges plus node-record refreshes (every TTL/3); the idle traffic is subtracted from the per-record bytes and reported apart",
    "MTU: chitchat sends one datagram of at most 65,507 bytes per message and caps a delta at what fits (the rest waits for later rounds); gossipdir messages are capped at 256 KiB and continue in later round trips; with one small value neither limit is reached",
    "state: chitchat's key lives as long as its node; gossipdir's record expires unless refreshed and is verified and merged into a store with capacity caps",
    "seed peers: the same seeded choice of `--degree` earlier nodes for gossipdir (bootstrap), chitchat (seed_nodes) and gossipsub (dials); origins are the same seeded nodes for the three",
    "one process, one tokio runtime, 2 shared cores: the systems run one after another, never at the same time; times are upper bounds under load, bytes and rounds depend little on it",
    "full view (part 1): an in-memory network of real engines and the real codec, no transport; the full-view design's cost is computed from the measured size of one whole directory as one message (it would also need to be split: 10,000 records are over the 256 KiB message limit)",
];

pub fn run_compare(args: CompareArgs) -> anyhow::Result<()> {
    let report = compare(&args)?;
    let tables = to_tables(&report, &args);
    if args.json {
        eprint!("{tables}");
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{tables}");
    }
    Ok(())
}

/// Runs the comparison (parts as `--systems` says), writes the SVGs if asked, returns the
/// report.
pub fn compare(args: &CompareArgs) -> anyhow::Result<CompareReport> {
    for s in &args.systems {
        if !["fullview", "gossipdir", "chitchat", "gossipsub"].contains(&s.as_str()) {
            bail!("--systems: fullview, gossipdir, chitchat and/or gossipsub, not {s}");
        }
    }
    if args.nodes.is_empty() || args.nodes.iter().any(|n| *n < 2) {
        bail!("--nodes: sizes of at least 2");
    }
    if args.trials == 0 {
        bail!("--trials: at least 1");
    }
    if args.interval_ms < 10 {
        bail!("--interval-ms: at least 10");
    }
    let started = Instant::now();
    let full_view = if args.wants("fullview") {
        fullview::run(&FullViewSettings {
            records: args.records.clone(),
            nodes: args.fullview_nodes,
            churn: args.churn,
            steady_rounds: 5,
            churn_warmup: 3,
            churn_rounds: args.churn_rounds,
            seed: args.seed,
        })?
    } else {
        Vec::new()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (sample_bytes, gossipdir, chitchat, gossipsub) = runtime.block_on(networks(args))?;
    // The runtime's leftover tasks (aborted nodes) go with it.
    runtime.shutdown_timeout(Duration::from_secs(2));
    let mut rows = Vec::new();
    for n in &args.nodes {
        if let Some(r) = gossipdir.iter().find(|r| r.nodes == *n) {
            rows.push(row_of_latency("gossipdir", r, args.interval_ms));
        }
        if let Some(c) = chitchat.iter().find(|c| c.nodes == *n) {
            rows.push(row_of_chitchat(c, args));
        }
        if let Some(r) = gossipsub.iter().find(|r| r.nodes == *n) {
            rows.push(row_of_latency("gossipsub", r, 1000));
        }
    }
    let mut settings = BTreeMap::new();
    settings.insert("nodes", serde_json::json!(args.nodes));
    settings.insert("trials", serde_json::json!(args.trials));
    settings.insert("interval_ms", serde_json::json!(args.interval_ms));
    settings.insert("degree", serde_json::json!(args.degree));
    settings.insert("seed", serde_json::json!(args.seed));
    settings.insert("window_ms", serde_json::json!(args.window_ms));
    settings.insert("records", serde_json::json!(args.records));
    settings.insert("fullview_nodes", serde_json::json!(args.fullview_nodes));
    settings.insert("churn", serde_json::json!(args.churn));
    settings.insert("systems", serde_json::json!(args.systems));
    settings.insert(
        "gossipdir",
        serde_json::json!(format!(
            "real node::Node, TCP + noise + yamux on 127.0.0.1, mDNS off, fanout {}, push fanout {}, announce fanout ⌈ln N⌉ + 3",
            gossip::Config::default().fanout,
            gossip::Config::default().push_fanout
        )),
    );
    settings.insert(
        "chitchat",
        serde_json::json!("chitchat 0.13.0, UdpTransport on 127.0.0.1, protocol V1 (zstd-compressed digest), default failure detector, gossip to 3 live peers per interval (+ a seed / dead node at times)"),
    );
    settings.insert(
        "gossipsub",
        serde_json::json!("libp2p-gossipsub 0.50 defaults: D=6, D_low=5, D_high=12, heartbeat 1 s, signed; TCP + noise + yamux"),
    );
    let report = CompareReport {
        settings,
        record_bytes: sample_bytes,
        full_view,
        rows,
        gossipdir,
        gossipsub,
        chitchat,
        unfair: UNFAIR.to_vec(),
        total_secs: started.elapsed().as_secs_f64(),
    };
    if let Some(dir) = &args.svg_dir {
        write_svgs(dir, &report, args)?;
    }
    Ok(report)
}

type Networks = (
    usize,
    Vec<SystemReport>,
    Vec<ChitchatReport>,
    Vec<SystemReport>,
);

async fn networks(args: &CompareArgs) -> anyhow::Result<Networks> {
    let sample = latency::sample_record(args.seed)?;
    tracing::info!(
        record_bytes = sample.record_bytes,
        push_message_bytes = sample.push_message_bytes,
        "the record every system gossips"
    );
    let largs = args.latency_args();
    let mut gossipdir = Vec::new();
    let mut chitchat = Vec::new();
    let mut gossipsub = Vec::new();
    for &n in &args.nodes {
        if args.wants("gossipdir") {
            tracing::info!(n, "gossipdir: starting");
            gossipdir.push(latency::run_gossipdir(&largs, n, &sample).await?);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if args.wants("chitchat") {
            tracing::info!(n, "chitchat: starting");
            chitchat.push(run_chitchat(args, n, &sample).await?);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if args.wants("gossipsub") {
            tracing::info!(n, "gossipsub: starting");
            gossipsub.push(latency::run_gossipsub(&largs, n, &sample).await?);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    Ok((sample.record_bytes, gossipdir, chitchat, gossipsub))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn run_chitchat(
    args: &CompareArgs,
    n: usize,
    sample: &Sample,
) -> anyhow::Result<ChitchatReport> {
    let setup = Instant::now();
    let net = chitchat_net::start(
        n,
        args.degree,
        args.seed,
        Duration::from_millis(args.interval_ms),
        Duration::from_secs(args.setup_deadline_secs),
    )
    .await?;
    let setup = setup.elapsed();
    let window = Duration::from_millis(args.window_ms);
    let deadline = Duration::from_secs(args.trial_deadline_secs);
    // The same origins as the latency harness draws for gossipdir and gossipsub.
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let mut values = rand::rngs::StdRng::seed_from_u64(args.seed ^ 0x00c4_17c4_a700);
    let arrivals = net.arrivals.clone();
    let mean = |before: &[u64], after: &[u64]| {
        before.iter().zip(after).map(|(a, b)| b - a).sum::<u64>() as f64 / n as f64
    };
    let mut trials = Vec::new();
    for t in 0..args.trials {
        let origin = rng.gen_range(0..n);
        let value: String = (&mut values)
            .sample_iter(Alphanumeric)
            .take(sample.record_bytes)
            .map(char::from)
            .collect();
        let b0 = net.bytes_in();
        let t0 = Instant::now();
        tokio::time::sleep(window).await;
        let b1 = net.bytes_in();
        let idle = mean(&b0, &b1) / t0.elapsed().as_secs_f64();
        for r in &arrivals.received_at {
            r.store(0, Ordering::SeqCst);
        }
        arrivals.trial.store(u64::from(t), Ordering::SeqCst);
        let before = net.bytes_in();
        let start = Instant::now();
        let base = (start - arrivals.base).as_nanos() as u64;
        arrivals.received_at[origin].store(base + 1, Ordering::SeqCst);
        net.set(origin, format!("{}{t}", chitchat_net::KEY_PREFIX), value)
            .await;
        loop {
            if arrivals
                .received_at
                .iter()
                .all(|r| r.load(Ordering::SeqCst) != 0)
                || start.elapsed() > deadline
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let held: Vec<Option<Duration>> = arrivals
            .received_at
            .iter()
            .map(|r| {
                let v = r.load(Ordering::SeqCst);
                (v != 0).then(|| Duration::from_nanos((v - 1).saturating_sub(base)))
            })
            .collect();
        let converged = held.iter().all(|h| h.is_some());
        let latency = held
            .iter()
            .flatten()
            .max()
            .copied()
            .unwrap_or(start.elapsed());
        let mut arrivals_ms: Vec<f64> = held.iter().flatten().map(|d| ms(*d)).collect();
        let end = window.max(latency + Duration::from_secs(1));
        if let Some(rest) = end.checked_sub(start.elapsed()) {
            tokio::time::sleep(rest).await;
        }
        let after = net.bytes_in();
        let trial = CcTrial {
            origin,
            converged,
            latency_ms: ms(latency),
            median_arrival_ms: median(&mut arrivals_ms).unwrap_or(f64::NAN),
            window_ms: ms(start.elapsed()),
            bytes_in_mean: mean(&before, &after),
            idle_bytes_per_sec: idle,
        };
        tracing::info!(
            n,
            t,
            origin,
            converged,
            latency_ms = trial.latency_ms,
            median_arrival_ms = trial.median_arrival_ms,
            bytes_in_mean = trial.bytes_in_mean,
            "chitchat trial"
        );
        trials.push(trial);
    }
    net.shutdown().await;
    let converged = trials.iter().filter(|t| t.converged).count();
    let mut lat: Vec<f64> = trials
        .iter()
        .filter(|t| t.converged)
        .map(|t| t.latency_ms)
        .collect();
    let max = lat.iter().copied().reduce(f64::max);
    let mut net_bytes: Vec<f64> = trials
        .iter()
        .map(|t| t.bytes_in_mean - t.idle_bytes_per_sec * t.window_ms / 1000.0)
        .collect();
    let idle = trials.iter().map(|t| t.idle_bytes_per_sec).sum::<f64>() / trials.len() as f64;
    Ok(ChitchatReport {
        nodes: n,
        setup_secs: setup.as_secs_f64(),
        value_bytes: sample.record_bytes,
        converged,
        latency_ms_median: median(&mut lat),
        latency_ms_max: max,
        net_bytes_in: median(&mut net_bytes).unwrap_or(0.0),
        idle_bytes_per_node_per_sec: idle,
        trials,
    })
}

fn row_of_latency(system: &'static str, r: &SystemReport, interval_ms: u64) -> Row {
    let gossipdir = system == "gossipdir";
    let interval = interval_ms as f64;
    Row {
        system,
        nodes: r.nodes,
        trials: r.trials.len(),
        converged: r.converged,
        latency_ms_median: r.latency_ms_median,
        latency_ms_max: r.latency_ms_max,
        rounds_median: r.latency_ms_median.map(|v| v / interval),
        rounds_max: r.latency_ms_max.map(|v| v / interval),
        bytes_per_node: if gossipdir {
            r.net_payload_in
        } else {
            r.net_transport_in
        },
        bytes_counted: if gossipdir {
            "sync codec payload"
        } else {
            "libp2p substream bytes"
        },
        transport_bytes_per_node: gossipdir.then_some(r.net_transport_in),
        idle_bytes_per_node_per_sec: if gossipdir {
            r.baseline_per_node_per_sec.payload_in
        } else {
            r.baseline_per_node_per_sec.transport_in
        },
        gross_bytes_per_node: median(
            &mut r
                .trials
                .iter()
                .map(|t| {
                    if gossipdir {
                        t.payload_in_mean
                    } else {
                        t.transport_in_mean
                    }
                })
                .collect::<Vec<_>>(),
        )
        .unwrap_or(0.0),
        window_secs: median(
            &mut r
                .trials
                .iter()
                .map(|t| t.window_ms / 1000.0)
                .collect::<Vec<_>>(),
        )
        .unwrap_or(0.0),
        setup_secs: r.setup_secs,
    }
}

fn row_of_chitchat(c: &ChitchatReport, args: &CompareArgs) -> Row {
    let interval = args.interval_ms as f64;
    Row {
        system: "chitchat",
        nodes: c.nodes,
        trials: c.trials.len(),
        converged: c.converged,
        latency_ms_median: c.latency_ms_median,
        latency_ms_max: c.latency_ms_max,
        rounds_median: c.latency_ms_median.map(|v| v / interval),
        rounds_max: c.latency_ms_max.map(|v| v / interval),
        bytes_per_node: c.net_bytes_in,
        bytes_counted: "UDP payload",
        transport_bytes_per_node: None,
        idle_bytes_per_node_per_sec: c.idle_bytes_per_node_per_sec,
        gross_bytes_per_node: median(
            &mut c.trials.iter().map(|t| t.bytes_in_mean).collect::<Vec<_>>(),
        )
        .unwrap_or(0.0),
        window_secs: median(
            &mut c
                .trials
                .iter()
                .map(|t| t.window_ms / 1000.0)
                .collect::<Vec<_>>(),
        )
        .unwrap_or(0.0),
        setup_secs: c.setup_secs,
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.digits$}"))
}

fn thousands(v: f64) -> String {
    let neg = v < 0.0;
    let s = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if neg { format!("-{out}") } else { out }
}

/// The human tables (markdown).
pub fn to_tables(report: &CompareReport, args: &CompareArgs) -> String {
    let mut out = String::new();
    if !report.full_view.is_empty() {
        let first = &report.full_view[0];
        out.push_str(&format!(
            "\n## 1. Full-view exchange vs ours: bytes received per node per round (fanout {}, {} engines in memory, {} % of records refreshed per round under churn)\n\n",
            first.fanout,
            first.nodes,
            args.churn * 100.0
        ));
        out.push_str("| records | record bytes | full view (2 × fanout × whole directory) | ours steady (default) | ours steady (reconciliation only) | churn minimum (refreshes × record) | ours churn (default) | ours churn (reconciliation only) | full view / ours, churn (default) |\n");
        out.push_str("|---|---|---|---|---|---|---|---|---|\n");
        for r in &report.full_view {
            let d = r.ours.first();
            let p = r.ours.get(1);
            let fmt_o = |o: Option<&fullview::Ours>, steady: bool| {
                o.map_or("-".to_owned(), |o| {
                    if steady {
                        thousands(o.steady.received_per_node_per_round)
                    } else {
                        format!(
                            "{} ({:.2}× min)",
                            thousands(o.churn.received_per_node_per_round),
                            o.churn_multiple_of_minimum
                        )
                    }
                })
            };
            out.push_str(&format!(
                "| {} | {:.0} | {} | {} | {} | {} ({} × {:.0}) | {} | {} | {:.0}× |\n",
                thousands(r.records as f64),
                r.record_bytes,
                thousands(r.full_view_per_node_per_round),
                fmt_o(d, true),
                fmt_o(p, true),
                thousands(r.churn_minimum_per_node_per_round),
                r.refreshes_per_round,
                r.record_bytes,
                fmt_o(d, false),
                fmt_o(p, false),
                d.map_or(0.0, |d| r.full_view_per_node_per_round
                    / d.churn.received_per_node_per_round.max(1.0)),
            ));
        }
        out.push_str("\nChecks of part 1 (ours):\n\n");
        out.push_str("| records | variant | churn: refreshes everywhere at round end | rounds to identical stores after churn | misbehaved | max one node one round (churn) | messages per node per round (churn) |\n|---|---|---|---|---|---|---|\n");
        for r in &report.full_view {
            for o in &r.ours {
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} | {:.1} |\n",
                    thousands(r.records as f64),
                    o.variant,
                    o.churn
                        .refreshes_everywhere_at_round_end
                        .map_or("-".to_owned(), |v| format!("{:.1} %", v * 100.0)),
                    o.rounds_to_identical_after_churn
                        .map_or("not within 10".to_owned(), |v| v.to_string()),
                    o.steady.misbehaved + o.churn.misbehaved,
                    thousands(o.churn.received_max_node_round as f64),
                    o.churn.messages_per_node_per_round
                ));
            }
        }
        out.push_str("\nWhere ours' churn bytes go (default variant; received per node per round, by message kind):\n\n");
        out.push_str("| records | kind | bytes | share | messages | bytes per message |\n|---|---|---|---|---|---|\n");
        for r in &report.full_view {
            let Some(d) = r.ours.first() else { continue };
            let total = d.churn.received_per_node_per_round.max(1.0);
            for (kind, k) in &d.churn.breakdown {
                out.push_str(&format!(
                    "| {} | {} | {} | {:.1} % | {:.1} | {:.0} |\n",
                    thousands(r.records as f64),
                    kind,
                    thousands(k.bytes_per_node_per_round),
                    100.0 * k.bytes_per_node_per_round / total,
                    k.messages_per_node_per_round,
                    k.bytes_per_node_per_round / k.messages_per_node_per_round.max(1e-9),
                ));
            }
            out.push_str(&format!(
                "| {} | records received (copies) | {:.1} per round = {:.2} per refresh | | | |\n",
                thousands(r.records as f64),
                d.churn.records_per_node_per_round,
                d.churn.records_per_node_per_round / r.refreshes_per_round.max(1) as f64,
            ));
        }
    }
    if !report.rows.is_empty() {
        out.push_str(&format!(
            "\n## 2–3. A new key / record reaching all N nodes (interval {} ms; record / value {} bytes; {} trials)\n\n",
            args.interval_ms, report.record_bytes, args.trials
        ));
        out.push_str("| N | system | converged | rounds median / max | wall median / max | bytes per node for it (idle subtracted) | gross in the trial window (window) | counted | idle bytes/s per node | setup |\n");
        out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
        for r in &report.rows {
            let net = |v: f64| {
                if v > 0.0 {
                    thousands(v)
                } else {
                    format!("noise ({})", thousands(v))
                }
            };
            let bytes = match r.transport_bytes_per_node {
                Some(t) => format!("{} (libp2p substreams: {})", net(r.bytes_per_node), net(t)),
                None => net(r.bytes_per_node),
            };
            out.push_str(&format!(
                "| {} | {} | {}/{} | {} / {} | {} / {} ms | {} | {} ({:.1} s) | {} | {} | {:.1} s |\n",
                r.nodes,
                r.system,
                r.converged,
                r.trials,
                opt(r.rounds_median, 2),
                opt(r.rounds_max, 2),
                opt(r.latency_ms_median, 1),
                opt(r.latency_ms_max, 1),
                bytes,
                thousands(r.gross_bytes_per_node),
                r.window_secs,
                r.bytes_counted,
                thousands(r.idle_bytes_per_node_per_sec),
                r.setup_secs
            ));
        }
        let late: Vec<String> = report
            .gossipdir
            .iter()
            .chain(&report.gossipsub)
            .filter_map(|r| {
                let l = r.late.as_ref()?;
                Some(if r.system == "gossipdir" {
                    format!(
                        "| {} | gossipdir: fresh node bootstrapped to one node | {} | holds all {} specialists + {} node records after {} ms; {} B payload in |",
                        r.nodes,
                        if l["holds_all"].as_bool() == Some(true) { "everything" } else { "NOT everything" },
                        l["records_to_learn"]["specialists"],
                        l["records_to_learn"]["node_records"],
                        l["ms_from_spawn"].as_f64().map_or("-".to_owned(), |v| format!("{v:.1}")),
                        l["payload_in"]
                    )
                } else {
                    format!(
                        "| {} | gossipsub: late subscriber dialling one node | {} of {} earlier messages | listened {} ms, mesh peers {} |",
                        r.nodes,
                        l["messages_received"],
                        l["earlier_messages"],
                        l["listened_ms"],
                        l["mesh_peers"]
                    )
                })
            })
            .collect();
        if !late.is_empty() {
            out.push_str("\nA node that joins after the trials' announcements:\n\n| N | who | got | detail |\n|---|---|---|---|\n");
            for l in late {
                out.push_str(&l);
                out.push('\n');
            }
        }
        if report.rows.iter().any(|r| {
            r.bytes_per_node <= 0.0 || r.transport_bytes_per_node.is_some_and(|t| t <= 0.0)
        }) {
            out.push_str("\n\"noise\": the idle traffic measured just before the trial, scaled to the trial window, was larger than all the window received; the record's own cost is then lost in the variation of the idle traffic (see the gross column and the idle rate).\n");
        }
    }
    out.push_str("\nDifferences of setting (what makes the comparison unfair):\n");
    for u in &report.unfair {
        out.push_str(&format!("- {u}\n"));
    }
    out.push_str(&format!("\nTotal: {:.0} s\n", report.total_secs));
    out
}

/// A net byte count worth drawing (idle noise can make it 0 or negative).
fn positive(v: f64) -> Option<f64> {
    (v > 0.0).then_some(v)
}

fn write_svgs(
    dir: &std::path::Path,
    report: &CompareReport,
    args: &CompareArgs,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let systems = ["gossipdir", "chitchat", "gossipsub"];
    let points = |system: &str, f: &dyn Fn(&Row) -> Option<f64>| -> Vec<(f64, f64)> {
        report
            .rows
            .iter()
            .filter(|r| r.system == system)
            .filter_map(|r| f(r).map(|v| (r.nodes as f64, v)))
            .collect()
    };
    if !report.rows.is_empty() {
        let mut series = Vec::new();
        for s in systems {
            series.push(Series {
                label: format!("{s}: median"),
                points: points(s, &|r| r.rounds_median),
                color: color(s),
                dashed: false,
            });
            series.push(Series {
                label: format!("{s}: max"),
                points: points(s, &|r| r.rounds_max),
                color: color(s),
                dashed: true,
            });
        }
        line_chart(
            &dir.join("compare-rounds.svg"),
            &format!(
                "Latency of a new key / record to all N nodes, in gossip intervals ({} ms; gossipsub: 1 s heartbeat)",
                args.interval_ms
            ),
            "nodes N",
            "rounds (latency / interval)",
            &series,
            false,
            false,
        )?;
        let series = vec![
            Series {
                label: "gossipdir: sync payload".into(),
                points: points("gossipdir", &|r| positive(r.bytes_per_node)),
                color: color("gossipdir"),
                dashed: false,
            },
            Series {
                label: "gossipdir: libp2p substream bytes".into(),
                points: points("gossipdir", &|r| {
                    r.transport_bytes_per_node.and_then(positive)
                }),
                color: color("gossipdir"),
                dashed: true,
            },
            Series {
                label: "chitchat: UDP payload".into(),
                points: points("chitchat", &|r| positive(r.bytes_per_node)),
                color: color("chitchat"),
                dashed: false,
            },
            Series {
                label: "gossipsub: libp2p substream bytes".into(),
                points: points("gossipsub", &|r| positive(r.bytes_per_node)),
                color: color("gossipsub"),
                dashed: false,
            },
        ];
        line_chart(
            &dir.join("compare-bytes.svg"),
            &format!(
                "Bytes per node for one new {}-byte key / record (idle subtracted; not drawn where idle noise swamps it)",
                report.record_bytes
            ),
            "nodes N",
            "bytes per node",
            &series,
            false,
            false,
        )?;
        let series: Vec<Series> = systems
            .iter()
            .map(|s| Series {
                label: s.to_string(),
                points: points(s, &|r| Some(r.idle_bytes_per_node_per_sec)),
                color: color(s),
                dashed: false,
            })
            .collect();
        line_chart(
            &dir.join("compare-idle.svg"),
            "Idle traffic: bytes received per node per second with nothing new",
            "nodes N",
            "bytes per node per second",
            &series,
            false,
            false,
        )?;
    }
    if !report.full_view.is_empty() {
        let fv = &report.full_view;
        let pts = |f: &dyn Fn(&FullViewRow) -> f64| -> Vec<(f64, f64)> {
            fv.iter().map(|r| (r.records as f64, f(r))).collect()
        };
        let series = vec![
            Series {
                label: "full view (steady or churn)".into(),
                points: pts(&|r| r.full_view_per_node_per_round),
                color: color("full view"),
                dashed: false,
            },
            Series {
                label: "ours, churn (default)".into(),
                points: pts(&|r| {
                    r.ours
                        .first()
                        .map_or(0.0, |o| o.churn.received_per_node_per_round)
                }),
                color: color("gossipdir"),
                dashed: false,
            },
            Series {
                label: "ours, churn (reconciliation only)".into(),
                points: pts(&|r| {
                    r.ours
                        .get(1)
                        .map_or(0.0, |o| o.churn.received_per_node_per_round)
                }),
                color: color("gossipdir"),
                dashed: true,
            },
            Series {
                label: "churn minimum (refreshes × record)".into(),
                points: pts(&|r| r.churn_minimum_per_node_per_round),
                color: color("minimum"),
                dashed: true,
            },
            Series {
                label: "ours, steady (default)".into(),
                points: pts(&|r| {
                    r.ours
                        .first()
                        .map_or(0.0, |o| o.steady.received_per_node_per_round)
                }),
                color: color("other"),
                dashed: false,
            },
        ];
        line_chart(
            &dir.join("compare-fullview.svg"),
            &format!(
                "Bytes received per node per round: full-view exchange vs ours ({} % churn)",
                args.churn * 100.0
            ),
            "records in the directory (log)",
            "bytes per node per round (log)",
            &series,
            true,
            true,
        )?;
    }
    tracing::info!(dir = %dir.display(), "SVG plots written");
    Ok(())
}
