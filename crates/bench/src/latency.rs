//! `gossipdir bench latency`: time and bytes until a new record reaches every node, gossipdir
//! against gossipsub (issue 8).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use node::event_loop::now_ms;

use anyhow::{Context, bail};
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::{gossipdir, gossipsub};

/// Measure how fast a new record reaches every node, gossipdir against gossipsub.
#[derive(clap::Args, Debug, Clone)]
pub struct LatencyArgs {
    /// Network sizes, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "10,50,100")]
    pub nodes: Vec<usize>,
    /// New records (announcements / publications) per size and system.
    #[arg(long, default_value_t = 10)]
    pub trials: u32,
    /// Print the JSON report on stdout (the tables then go to stderr).
    #[arg(long)]
    pub json: bool,
    /// Exchange loss: not injectable into the real node from outside the node crate; a value
    /// above 0 is refused with the way to measure it (the engine simulator).
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Seed of the topology, of the origins and of the engines.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Node i is bootstrapped to (gossipdir) / dials (gossipsub) this many random earlier nodes.
    #[arg(long, default_value_t = 6)]
    pub degree: usize,
    /// Measurement window of one trial (bytes are counted over it, from the announcement);
    /// stretched to the convergence time + 1 s when convergence is slower.
    #[arg(long, default_value_t = 3000)]
    pub window_ms: u64,
    /// A trial not converged within this long counts as not converged.
    #[arg(long, default_value_t = 30)]
    pub trial_deadline_secs: u64,
    /// Deadline of the setup (membership / meshes), per size.
    #[arg(long, default_value_t = 300)]
    pub setup_deadline_secs: u64,
    /// How long the late gossipsub subscriber listens for earlier messages.
    #[arg(long, default_value_t = 5000)]
    pub late_listen_ms: u64,
    /// Systems to run.
    #[arg(long, value_delimiter = ',', default_value = "gossipdir,gossipsub")]
    pub systems: Vec<String>,
    /// Gossip round interval of the gossipdir nodes, in ms (the node's default: 1000).
    #[arg(long, default_value_t = node::config::DEFAULT_INTERVAL.as_millis() as u64)]
    pub interval_ms: u64,
}

pub(crate) fn progress(args: std::fmt::Arguments<'_>) {
    eprintln!("[bench latency] {args}");
}

/// The earlier nodes node `i` is bootstrapped to / dials (seeded, the same for both systems).
pub fn bootstrap_choice(seed: u64, i: usize, degree: usize) -> Vec<usize> {
    let mut rng =
        rand::rngs::StdRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let k = degree.min(i);
    sample(&mut rng, i, k).into_iter().collect()
}

/// Byte and exchange counters of one node, from its Prometheus text.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Bytes {
    /// Sync codec bytes read (gossipdir payload: CBOR messages of `/gossipdir/sync/1.0.0`).
    pub payload_in: u64,
    /// libp2p bandwidth counter, inbound: bytes read from every substream (all protocols and
    /// multistream-select; noise and yamux framing excluded).
    pub transport_in: u64,
    pub exchanges_started: u64,
    pub exchanges_completed: u64,
    pub pushes: u64,
    /// Connections established so far (libp2p swarm metric, both roles).
    pub connections: u64,
}

impl Bytes {
    pub fn from_metrics(text: &str) -> Bytes {
        let mut b = Bytes::default();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(v) = value.trim().parse::<f64>() else {
                continue;
            };
            let v = v as u64;
            if name.starts_with("gossipdir_exchange_bytes_total")
                && name.contains("direction=\"in\"")
            {
                b.payload_in += v;
            } else if name.starts_with("libp2p_bandwidth_bytes_total") && name.contains("Inbound") {
                b.transport_in += v;
            } else if name == "gossipdir_exchanges_started_total" {
                b.exchanges_started += v;
            } else if name == "gossipdir_exchanges_completed_total" {
                b.exchanges_completed += v;
            } else if name == "gossipdir_pushes_total" {
                b.pushes += v;
            } else if name.starts_with("libp2p_swarm_connections_established_total") {
                b.connections += v;
            }
        }
        b
    }
}

/// `bytes_received` (TCP payload: noise and yamux framing included, TCP/IP headers excluded)
/// of every established TCP socket of this process, by 4-tuple, from `ss -tinp`.
fn wire() -> std::collections::HashMap<String, u64> {
    let mut out = std::collections::HashMap::new();
    let Ok(o) = std::process::Command::new("ss")
        .args(["-tinpH", "state", "established"])
        .output()
    else {
        return out;
    };
    let text = String::from_utf8_lossy(&o.stdout);
    let me = format!("pid={},", std::process::id());
    let mut key: Option<String> = None;
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) {
            key = line.contains(&me).then(|| {
                line.split_whitespace()
                    .filter(|t| t.contains(':') && !t.starts_with("users"))
                    .collect::<Vec<_>>()
                    .join(" ")
            });
        } else if let Some(k) = &key
            && let Some(v) = line
                .split_whitespace()
                .find_map(|t| t.strip_prefix("bytes_received:"))
                .and_then(|v| v.parse::<u64>().ok())
        {
            out.insert(k.clone(), v);
        }
    }
    out
}

/// Bytes received over all sockets between two [`wire`] snapshots (sockets opened in between
/// count from 0; sockets closed in between are lost).
fn wire_delta(
    before: &std::collections::HashMap<String, u64>,
    after: &std::collections::HashMap<String, u64>,
) -> u64 {
    after
        .iter()
        .map(|(k, v)| v.saturating_sub(before.get(k).copied().unwrap_or(0)))
        .sum()
}

/// The specialist of trial `t` and its encoded size, padded so the record is about 350 bytes.
pub(crate) struct Sample {
    pub(crate) pad: String,
    pub(crate) record_bytes: usize,
    pub(crate) push_message_bytes: usize,
}

fn announce(t: u32, seed: u64, pad: &str) -> node::Announce {
    let mut meta = BTreeMap::new();
    meta.insert("model".to_owned(), "latency-bench".to_owned());
    meta.insert("pad".to_owned(), pad.to_owned());
    node::Announce {
        name: format!("latency-{seed}-{t:05}"),
        capabilities: vec!["latency-bench".to_owned(), capability(t, seed)],
        endpoint: Some(format!("https://specialist-{t:05}.example/v1")),
        meta,
        ttl: None,
    }
}

fn capability(t: u32, seed: u64) -> String {
    format!("trial-{seed}-{t:05}")
}

fn encoded(a: &node::Announce) -> anyhow::Result<directory::Record> {
    let mut issuer = directory::Issuer::new(
        directory::Keypair::generate_ed25519(),
        directory::Limits::default(),
    );
    issuer
        .specialist(
            &a.name,
            directory::Specialist {
                capabilities: a.capabilities.clone(),
                endpoint: a.endpoint.clone(),
                meta: a.meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                node_lease: true,
            },
            node::config::DEFAULT_SPECIALIST_TTL.as_millis() as u64,
            now_ms(),
        )
        .map_err(|e| anyhow::anyhow!("cannot issue the sample record: {e}"))
}

pub(crate) fn sample_record(seed: u64) -> anyhow::Result<Sample> {
    let mut pad = String::new();
    loop {
        let r = encoded(&announce(0, seed, &pad))?;
        if r.encode().len() >= 350 {
            let push = gossip::wire::encode(&gossip::Request::Push(vec![r.to_raw()]));
            return Ok(Sample {
                record_bytes: r.encode().len(),
                push_message_bytes: push.len(),
                pad,
            });
        }
        pad.push('x');
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    pub origin: usize,
    pub converged: bool,
    /// Until the last node held it (gossipdir: its change feed; gossipsub: its `Message` event).
    pub latency_ms: f64,
    /// Median over nodes of the arrival time.
    pub median_arrival_ms: f64,
    pub window_ms: f64,
    /// Mean over nodes of the inbound bytes in the window (gross, baseline not subtracted).
    pub payload_in_mean: f64,
    pub transport_in_mean: f64,
    /// Socket bytes_received delta / N.
    pub wire_in_mean: f64,
    /// The idle window measured just before this trial, per node per second.
    pub baseline: Rates,
    /// Most inbound transport bytes of one node.
    pub transport_in_max: u64,
    pub pushes: u64,
    pub exchanges_started: u64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Rates {
    /// Per node per second, no record in flight.
    pub payload_in: f64,
    pub transport_in: f64,
    pub wire_in: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SystemReport {
    pub system: String,
    pub nodes: usize,
    pub setup_secs: f64,
    pub trials: Vec<Trial>,
    pub converged: usize,
    pub latency_ms_median: Option<f64>,
    pub latency_ms_max: Option<f64>,
    pub median_arrival_ms_median: Option<f64>,
    pub baseline_per_node_per_sec: Rates,
    /// Per node per record, medians over trials, baseline subtracted.
    pub net_payload_in: f64,
    pub net_transport_in: f64,
    pub net_wire_in: f64,
    /// The same divided by the encoded record size.
    pub payload_multiple: f64,
    pub transport_multiple: f64,
    pub wire_multiple: f64,
    pub late: Option<serde_json::Value>,
}

#[derive(Debug, Serialize)]
struct Report {
    transport: &'static str,
    record_bytes: usize,
    push_message_bytes: usize,
    interval_ms: u64,
    push_fanout: usize,
    gossipsub: &'static str,
    degree: usize,
    seed: u64,
    window_ms: u64,
    counted: BTreeMap<&'static str, &'static str>,
    results: Vec<SystemReport>,
}

pub(crate) fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mean(deltas: impl Iterator<Item = u64>, n: usize) -> f64 {
    deltas.sum::<u64>() as f64 / n as f64
}

pub fn run_latency(args: LatencyArgs) -> anyhow::Result<()> {
    if args.loss > 0.0 {
        bail!(
            "--loss: exchange loss cannot be injected into real nodes from outside the node crate \
             (it needs a NodeConfig test knob that drops a fraction of sync requests). Measure it \
             with the engine simulator: gossipdir simulate --model engine --loss {} --nodes N",
            args.loss
        );
    }
    if args.nodes.is_empty() || args.nodes.iter().any(|n| *n < 2) {
        bail!("--nodes: sizes of at least 2");
    }
    if args.trials == 0 {
        bail!("--trials: at least 1");
    }
    for s in &args.systems {
        if s != "gossipdir" && s != "gossipsub" {
            bail!("--systems: gossipdir and/or gossipsub, not {s}");
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(latency(args))
}

async fn latency(args: LatencyArgs) -> anyhow::Result<()> {
    let sample = sample_record(args.seed)?;
    progress(format_args!(
        "record: {} bytes encoded, push message {} bytes",
        sample.record_bytes, sample.push_message_bytes
    ));
    let mut results = Vec::new();
    for &n in &args.nodes {
        if args.systems.iter().any(|s| s == "gossipdir") {
            let r = run_gossipdir(&args, n, &sample).await?;
            print_one(&r, sample.record_bytes);
            results.push(r);
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        if args.systems.iter().any(|s| s == "gossipsub") {
            let r = run_gossipsub(&args, n, &sample).await?;
            print_one(&r, sample.record_bytes);
            results.push(r);
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    let mut counted = BTreeMap::new();
    counted.insert("payload_in", "gossipdir sync codec bytes read: the CBOR request/response messages of /gossipdir/sync/1.0.0 (pushes, summaries, reconciliation); nothing else. 0 for gossipsub");
    counted.insert("transport_in", "libp2p bandwidth counter (with_bandwidth_metrics), inbound: every byte read from every yamux substream, i.e. all protocols (gossipdir: sync, identify, ping, kad, autonat; gossipsub: RPCs incl. heartbeat control IHAVE/IWANT/GRAFT/PRUNE) and multistream-select negotiation; noise and yamux framing excluded");
    counted.insert("wire_in", "sum of tcp_info bytes_received (ss -tinp) over the process's established sockets / N: TCP payload incl. noise and yamux framing, TCP/IP headers excluded; sockets closed inside the window are missed");
    counted.insert("net", "per node per record: median over trials of (trial window delta - the idle window measured just before that trial, scaled to the same length), mean over nodes");
    let report = Report {
        transport: "libp2p tcp+noise+yamux on 127.0.0.1, one process",
        record_bytes: sample.record_bytes,
        push_message_bytes: sample.push_message_bytes,
        interval_ms: args.interval_ms,
        push_fanout: gossip::Config::default().push_fanout,
        gossipsub: "libp2p-gossipsub 0.50 defaults: D=6, D_low=5, D_high=12, D_lazy=6, heartbeat 1 s, signed",
        degree: args.degree,
        seed: args.seed,
        window_ms: args.window_ms,
        counted,
        results,
    };
    let table = to_table(&report);
    if args.json {
        eprint!("{table}");
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{table}");
    }
    Ok(())
}

fn print_one(r: &SystemReport, record: usize) {
    progress(format_args!(
        "{} N={}: {}/{} converged, latency median {} max {}, net bytes/node/record: payload {:.0} ({:.2}x), transport {:.0} ({:.2}x), wire {:.0} ({:.2}x) of a {record}-byte record",
        r.system,
        r.nodes,
        r.converged,
        r.trials.len(),
        fmt_ms(r.latency_ms_median),
        fmt_ms(r.latency_ms_max),
        r.net_payload_in,
        r.payload_multiple,
        r.net_transport_in,
        r.transport_multiple,
        r.net_wire_in,
        r.wire_multiple
    ));
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.1} ms"))
}

fn to_table(report: &Report) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "record: {} bytes encoded (push message {} bytes); interval {} ms; push fanout {}; degree {}; seed {}\n",
        report.record_bytes,
        report.push_message_bytes,
        report.interval_ms,
        report.push_fanout,
        report.degree,
        report.seed
    ));
    out.push_str("| N | system | converged | latency median | latency max | median arrival | payload B/node/rec | transport B/node/rec | wire B/node/rec |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for r in &report.results {
        let payload = if r.system == "gossipdir" {
            format!("{:.0} ({:.2}×)", r.net_payload_in, r.payload_multiple)
        } else {
            "-".to_owned()
        };
        out.push_str(&format!(
            "| {} | {} | {}/{} | {} | {} | {} | {} | {:.0} ({:.2}×) | {:.0} ({:.2}×) |\n",
            r.nodes,
            r.system,
            r.converged,
            r.trials.len(),
            fmt_ms(r.latency_ms_median),
            fmt_ms(r.latency_ms_max),
            fmt_ms(r.median_arrival_ms_median),
            payload,
            r.net_transport_in,
            r.transport_multiple,
            r.net_wire_in,
            r.wire_multiple
        ));
    }
    out.push_str("\nBaseline (no record in flight), per node per second:\n");
    out.push_str("| N | system | payload B/s | transport B/s | wire B/s | setup |\n|---|---|---|---|---|---|\n");
    for r in &report.results {
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.1} s |\n",
            r.nodes,
            r.system,
            r.baseline_per_node_per_sec.payload_in,
            r.baseline_per_node_per_sec.transport_in,
            r.baseline_per_node_per_sec.wire_in,
            r.setup_secs
        ));
    }
    let late: Vec<&SystemReport> = report.results.iter().filter(|r| r.late.is_some()).collect();
    if !late.is_empty() {
        out.push_str("\nLate joiner:\n");
        for r in late {
            out.push_str(&format!(
                "- {} N={}: {}\n",
                r.system,
                r.nodes,
                r.late.as_ref().map(|v| v.to_string()).unwrap_or_default()
            ));
        }
    }
    out
}

fn summarize(
    system: &str,
    n: usize,
    setup: Duration,
    trials: Vec<Trial>,
    record: usize,
    late: Option<serde_json::Value>,
) -> SystemReport {
    let converged = trials.iter().filter(|t| t.converged).count();
    let mut lat: Vec<f64> = trials
        .iter()
        .filter(|t| t.converged)
        .map(|t| t.latency_ms)
        .collect();
    let max = lat
        .iter()
        .copied()
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    let mut arr: Vec<f64> = trials
        .iter()
        .filter(|t| t.converged)
        .map(|t| t.median_arrival_ms)
        .collect();
    let net = |f: &dyn Fn(&Trial) -> f64, rate: &dyn Fn(&Rates) -> f64| {
        let mut v: Vec<f64> = trials
            .iter()
            .map(|t| f(t) - rate(&t.baseline) * t.window_ms / 1000.0)
            .collect();
        median(&mut v).unwrap_or(0.0)
    };
    let net_payload_in = net(&|t| t.payload_in_mean, &|b| b.payload_in);
    let net_transport_in = net(&|t| t.transport_in_mean, &|b| b.transport_in);
    let net_wire_in = net(&|t| t.wire_in_mean, &|b| b.wire_in);
    let k = trials.len().max(1) as f64;
    let baseline = Rates {
        payload_in: trials.iter().map(|t| t.baseline.payload_in).sum::<f64>() / k,
        transport_in: trials.iter().map(|t| t.baseline.transport_in).sum::<f64>() / k,
        wire_in: trials.iter().map(|t| t.baseline.wire_in).sum::<f64>() / k,
    };
    SystemReport {
        system: system.to_owned(),
        nodes: n,
        setup_secs: setup.as_secs_f64(),
        converged,
        latency_ms_median: median(&mut lat),
        latency_ms_max: max,
        median_arrival_ms_median: median(&mut arr),
        payload_multiple: net_payload_in / record as f64,
        transport_multiple: net_transport_in / record as f64,
        wire_multiple: net_wire_in / record as f64,
        net_payload_in,
        net_transport_in,
        net_wire_in,
        baseline_per_node_per_sec: baseline,
        trials,
        late,
    }
}

/// Waits, after the membership formed, until no node established a connection for
/// [`SETTLED`]: with the full view every node ends up connected to every other (Kademlia's
/// bootstrap queries and the first exchanges dial them), a storm of ~N² handshakes that
/// lasts seconds beyond the membership and, in a first trial that overlapped it, made the
/// news take a hop's worth longer per hop. gossipsub's setup waits for its meshes likewise.
async fn settle(nodes: &[node::Node], deadline: Duration) -> anyhow::Result<()> {
    const SETTLED: Duration = Duration::from_secs(2);
    let start = Instant::now();
    let connections = |b: &[Bytes]| b.iter().map(|b| b.connections).sum::<u64>();
    let mut last = connections(&gossipdir::snapshot(nodes).await?);
    let mut since = Instant::now();
    while since.elapsed() < SETTLED {
        if start.elapsed() > deadline {
            bail!("gossipdir nodes still establishing connections after {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = connections(&gossipdir::snapshot(nodes).await?);
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    progress(format_args!(
        "gossipdir: {last} connections established, none in the last {SETTLED:?} ({:.1?} after the membership)",
        start.elapsed()
    ));
    Ok(())
}

/// Per node per second over an idle window of length `window` (nothing announced).
async fn idle_gossipdir(nodes: &[node::Node], window: Duration) -> anyhow::Result<Rates> {
    let n = nodes.len();
    let b0 = gossipdir::snapshot(nodes).await?;
    let w0 = wire();
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let b1 = gossipdir::snapshot(nodes).await?;
    let secs = t0.elapsed().as_secs_f64();
    let w1 = wire();
    Ok(Rates {
        payload_in: mean(
            b0.iter().zip(&b1).map(|(a, b)| b.payload_in - a.payload_in),
            n,
        ) / secs,
        transport_in: mean(
            b0.iter()
                .zip(&b1)
                .map(|(a, b)| b.transport_in - a.transport_in),
            n,
        ) / secs,
        wire_in: wire_delta(&w0, &w1) as f64 / n as f64 / secs,
    })
}

pub(crate) async fn run_gossipdir(
    args: &LatencyArgs,
    n: usize,
    sample: &Sample,
) -> anyhow::Result<SystemReport> {
    let setup = Instant::now();
    let net = gossipdir::start_with_interval(
        n,
        args.degree,
        args.seed,
        Duration::from_secs(args.setup_deadline_secs),
        Duration::from_millis(args.interval_ms),
    )
    .await?;
    settle(&net.nodes, Duration::from_secs(args.setup_deadline_secs)).await?;
    let setup = setup.elapsed();
    let nodes = &net.nodes;
    let window = Duration::from_millis(args.window_ms);
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let mut trials = Vec::new();
    let deadline = Duration::from_secs(args.trial_deadline_secs);
    for t in 0..args.trials {
        let origin = rng.gen_range(0..n);
        let a = announce(t, args.seed, &sample.pad);
        let cap = capability(t, args.seed);
        let baseline = idle_gossipdir(nodes, window).await?;
        let before = gossipdir::snapshot(nodes).await?;
        let arrivals = gossipdir::arrivals(nodes, &cap);
        let r0 = wire();
        let start = Instant::now();
        nodes[origin].client.announce(a).await.context("announce")?;
        let held = gossipdir::arrival_times(arrivals, n, start, deadline).await?;
        let converged = held.iter().all(|h| h.is_some());
        let latency = held
            .iter()
            .flatten()
            .max()
            .copied()
            .unwrap_or(start.elapsed());
        let mut arrivals: Vec<f64> = held.iter().flatten().map(|d| ms(*d)).collect();
        let end = window.max(latency + Duration::from_secs(1));
        if let Some(rest) = end.checked_sub(start.elapsed()) {
            tokio::time::sleep(rest).await;
        }
        let after = gossipdir::snapshot(nodes).await?;
        let win = start.elapsed();
        let r1 = wire();
        let d = |f: fn(&Bytes) -> u64| before.iter().zip(&after).map(move |(a, b)| f(b) - f(a));
        let trial = Trial {
            origin,
            converged,
            latency_ms: ms(latency),
            median_arrival_ms: median(&mut arrivals).unwrap_or(f64::NAN),
            window_ms: ms(win),
            payload_in_mean: mean(d(|b| b.payload_in), n),
            transport_in_mean: mean(d(|b| b.transport_in), n),
            wire_in_mean: wire_delta(&r0, &r1) as f64 / n as f64,
            transport_in_max: d(|b| b.transport_in).max().unwrap_or(0),
            pushes: d(|b| b.pushes).sum(),
            exchanges_started: d(|b| b.exchanges_started).sum(),
            baseline,
        };
        progress(format_args!(
            "gossipdir N={n} trial {t}: origin {origin}, {}, last node at {:.1} ms (median node {:.1} ms), {} pushes, {} exchanges in {:.0} ms",
            if converged {
                "converged"
            } else {
                "NOT converged"
            },
            trial.latency_ms,
            trial.median_arrival_ms,
            trial.pushes,
            trial.exchanges_started,
            trial.window_ms
        ));
        trials.push(trial);
    }
    let late = late_gossipdir(args, &net, rng.gen_range(0..n)).await;
    let late = match late {
        Ok(v) => v,
        Err(e) => serde_json::json!({ "error": format!("{e:#}") }),
    };
    for node in net.nodes {
        node.abort();
    }
    Ok(summarize(
        "gossipdir",
        n,
        setup,
        trials,
        sample.record_bytes,
        Some(late),
    ))
}

/// A fresh node bootstrapped to one node after the trials' announcements: time, exchanges and
/// bytes until it holds every live record its bootstrap node holds.
async fn late_gossipdir(
    args: &LatencyArgs,
    net: &gossipdir::DirNet,
    boot: usize,
) -> anyhow::Result<serde_json::Value> {
    let n = net.nodes.len();
    let status = net.nodes[boot].client.status().await?;
    let want_specialists = status.specialists;
    let start = Instant::now();
    let mut config = gossipdir::config(args.seed, n, vec![net.addrs[boot].clone()]);
    config.interval = Duration::from_millis(args.interval_ms);
    let (joiner, _) = gossipdir::spawn(config).await?;
    let deadline = Duration::from_secs(args.trial_deadline_secs);
    let mut first_specialists: Option<(f64, usize)> = None;
    let result = loop {
        let s = joiner.client.status().await?;
        if first_specialists.is_none() && s.specialists > 0 {
            first_specialists = Some((ms(start.elapsed()), s.specialists));
        }
        if s.specialists >= want_specialists && s.nodes > n {
            let at = start.elapsed();
            let m = Bytes::from_metrics(&joiner.client.metrics().await?);
            break serde_json::json!({
                "bootstrap_node": boot,
                "records_to_learn": { "specialists": want_specialists, "node_records": n },
                "holds_all": true,
                "ms_from_spawn": ms(at),
                "first_specialists_seen": first_specialists.map(|(t, c)| serde_json::json!({"ms": t, "count": c})),
                "rounds_of_joiner": s.round,
                "exchanges_started_by_joiner": m.exchanges_started,
                "exchanges_completed_by_joiner": m.exchanges_completed,
                "payload_in": m.payload_in,
                "transport_in": m.transport_in,
            });
        }
        if start.elapsed() > deadline {
            break serde_json::json!({
                "bootstrap_node": boot,
                "holds_all": false,
                "after_ms": ms(start.elapsed()),
                "specialists": s.specialists,
                "want_specialists": want_specialists,
                "nodes": s.nodes,
            });
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    progress(format_args!("gossipdir N={n} late joiner: {result}"));
    joiner.abort();
    Ok(result)
}

pub(crate) async fn run_gossipsub(
    args: &LatencyArgs,
    n: usize,
    sample: &Sample,
) -> anyhow::Result<SystemReport> {
    let setup = Instant::now();
    let net = gossipsub::start(
        n,
        1,
        args.degree,
        args.seed,
        Duration::from_secs(args.setup_deadline_secs),
    )
    .await?;
    let setup = setup.elapsed();
    let nodes = &net.nodes;
    let shared = &net.shared;
    let snapshot = || nodes.iter().map(|x| x.bytes()).collect::<Vec<_>>();
    let window = Duration::from_millis(args.window_ms);
    let record = encoded(&announce(0, args.seed, &sample.pad))?.encode();
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let mut trials = Vec::new();
    let deadline = Duration::from_secs(args.trial_deadline_secs);
    let mut last_publish = Instant::now();
    for t in 0..args.trials {
        let origin = rng.gen_range(0..n);
        let id = u64::from(t) + 1;
        let baseline = {
            let b0 = snapshot();
            let w0 = wire();
            let t0 = Instant::now();
            tokio::time::sleep(window).await;
            let b1 = snapshot();
            let secs = t0.elapsed().as_secs_f64();
            let w1 = wire();
            Rates {
                payload_in: 0.0,
                transport_in: mean(
                    b0.iter()
                        .zip(&b1)
                        .map(|(a, b)| b.transport_in - a.transport_in),
                    n,
                ) / secs,
                wire_in: wire_delta(&w0, &w1) as f64 / n as f64 / secs,
            }
        };
        let mut data = record.clone();
        data[..8].copy_from_slice(&id.to_be_bytes());
        for r in &shared.received_at {
            r.store(0, Ordering::SeqCst);
        }
        shared.trial.store(id, Ordering::SeqCst);
        let before = snapshot();
        let r0 = wire();
        let start = Instant::now();
        let base = (start - shared.base).as_nanos() as u64;
        shared.received_at[origin].store(base + 1, Ordering::SeqCst);
        nodes[origin].publish(data).await?;
        last_publish = Instant::now();
        loop {
            if (0..n).all(|i| shared.received_at[i].load(Ordering::SeqCst) != 0)
                || start.elapsed() > deadline
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let held: Vec<Option<Duration>> = (0..n)
            .map(|i| {
                let v = shared.received_at[i].load(Ordering::SeqCst);
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
        let mut arrivals: Vec<f64> = held.iter().flatten().map(|d| ms(*d)).collect();
        let end = window.max(latency + Duration::from_secs(1));
        if let Some(rest) = end.checked_sub(start.elapsed()) {
            tokio::time::sleep(rest).await;
        }
        let after = snapshot();
        let win = start.elapsed();
        let r1 = wire();
        let trial = Trial {
            origin,
            converged,
            latency_ms: ms(latency),
            median_arrival_ms: median(&mut arrivals).unwrap_or(f64::NAN),
            window_ms: ms(win),
            payload_in_mean: 0.0,
            transport_in_mean: mean(
                before
                    .iter()
                    .zip(&after)
                    .map(|(a, b)| b.transport_in - a.transport_in),
                n,
            ),
            wire_in_mean: wire_delta(&r0, &r1) as f64 / n as f64,
            transport_in_max: before
                .iter()
                .zip(&after)
                .map(|(a, b)| b.transport_in - a.transport_in)
                .max()
                .unwrap_or(0),
            pushes: 0,
            exchanges_started: 0,
            baseline,
        };
        progress(format_args!(
            "gossipsub N={n} trial {t}: origin {origin}, {}, last node at {:.1} ms (median node {:.1} ms)",
            if converged {
                "converged"
            } else {
                "NOT converged"
            },
            trial.latency_ms,
            trial.median_arrival_ms
        ));
        trials.push(trial);
    }
    // A late subscriber: joins after every publication, dials one node, listens.
    let boot = rng.gen_range(0..n);
    let since_last = last_publish.elapsed();
    let late_node = gossipsub::spawn_node(n, shared.clone()).await?;
    late_node.dial(nodes[boot].addr.clone()).await?;
    tokio::time::sleep(Duration::from_millis(args.late_listen_ms)).await;
    let (mesh, peers) = late_node.mesh().await?;
    let got = shared.messages[n].load(Ordering::SeqCst);
    let late = serde_json::json!({
        "bootstrap_node": boot,
        "earlier_messages": args.trials,
        "joined_ms_after_last_publish": ms(since_last),
        "listened_ms": args.late_listen_ms,
        "messages_received": got,
        "mesh_peers": mesh,
        "topic_peers": peers,
    });
    progress(format_args!("gossipsub N={n} late subscriber: {late}"));
    late_node.abort();
    for node in &net.nodes {
        node.abort();
    }
    Ok(summarize(
        "gossipsub",
        n,
        setup,
        trials,
        sample.record_bytes,
        Some(late),
    ))
}
