//! `gossipdir demo`: N real nodes in one process on 127.0.0.1 (real TCP transport, noise and
//! yamux, or QUIC with `--transport quic`, and the real sync protocol; mDNS off), each
//! bootstrapped to two random earlier nodes.
//! Each trial announces a new specialist on a random node and measures how many rounds (ticks
//! of the announcing node) and how much wall time pass until every node holds it.
//!
//! The engine also pushes news at once (rumor mongering: `--push-fanout` eager pushes, 1 by
//! default, and id announcements to `--announce-fanout` more), so a specialist often reaches
//! every node before a single round has passed: such trials count 0 rounds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use rand::{Rng, SeedableRng};
use serde_json::json;

/// Run N real nodes in one process and measure convergence.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 10)]
    pub nodes: u32,
    /// Number of trials (announcements).
    #[arg(long, default_value_t = 20)]
    pub trials: u32,
    /// Gossip round interval of every node.
    #[arg(long, value_name = "DURATION", default_value = "250ms", value_parser = crate::node::parse_duration)]
    pub interval: Duration,
    /// Peers contacted per round.
    #[arg(long, default_value_t = 2)]
    pub fanout: u32,
    /// Peers a new record is pushed to at once; 0 reproduces the founding experiment's
    /// periodic-only exchanges.
    #[arg(long, default_value_t = 1)]
    pub push_fanout: usize,
    /// Further peers told only the ids of a new record (lazy push; 0 = off) [default:
    /// ⌈ln N⌉ + 3].
    #[arg(long, value_name = "K")]
    pub announce_fanout: Option<usize>,
    /// Members each node gossips with (partial view; 0 = every member, ~N connections per
    /// node).
    #[arg(long, value_name = "K", default_value_t = node::NodeConfig::DEFAULT_VIEW_SIZE)]
    pub view_size: usize,
    /// Lifetime of every node's node record (refreshed every third of it). A federation of
    /// many nodes at long rounds needs it to span enough rounds for a refresh to reach every
    /// node before the version it replaces expires.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = crate::node::parse_duration)]
    pub ttl: Duration,
    /// Transport between the nodes. With TCP both ends of every connection hold a descriptor
    /// of this one process (about 21 per node with a view of 4); QUIC multiplexes all of a
    /// node's connections over its one UDP socket, which is what lets 1,000 nodes fit under
    /// an open-file limit of 20,000.
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    pub transport: Transport,
    /// A window after the federation joined, before the trials, in which nothing is announced:
    /// the CPU and gossip bytes of a federation keeping itself alive (0 = none).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = crate::node::parse_duration)]
    pub idle: Duration,
    /// Seed of the choice of announcing nodes and of the engines.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// A trial not converged after this many rounds counts as not converged.
    #[arg(long, default_value_t = sim::DEFAULT_MAX_ROUNDS)]
    pub max_rounds: u32,
    /// Print the JSON report instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// The transport of the demo's nodes, on 127.0.0.1.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// TCP + noise + yamux.
    Tcp,
    /// QUIC v1 (TLS 1.3, streams of its own) over UDP.
    Quic,
}

impl Transport {
    fn listen(self) -> directory::Multiaddr {
        let addr = match self {
            Transport::Tcp => "/ip4/127.0.0.1/tcp/0",
            Transport::Quic => "/ip4/127.0.0.1/udp/0/quic-v1",
        };
        addr.parse().expect("valid multiaddr")
    }

    fn describe(self) -> &'static str {
        match self {
            Transport::Tcp => "libp2p tcp+noise+yamux on 127.0.0.1",
            Transport::Quic => "libp2p quic-v1 on 127.0.0.1",
        }
    }
}

/// Most nodes of one demo.
const MAX_NODES: u32 = 2000;

/// Idle connection timeout of the nodes when they gossip with a partial view (at least five
/// rounds: with fanout 2 a view member is contacted about every k / 2 rounds).
const DEMO_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// A line on stderr every this many nodes spawned (a large federation takes minutes).
const SPAWN_PROGRESS_EVERY: usize = 100;

/// Earlier nodes each node is bootstrapped to.
const BOOTSTRAP_DEGREE: usize = 2;

struct Trial {
    rounds: Option<u32>,
    wall: Duration,
    before_first_tick: u32,
    /// When half, nine tenths and 99 % of the nodes held it.
    half: Option<Duration>,
    nine_tenths: Option<Duration>,
    ninety_nine: Option<Duration>,
    /// Sync-protocol bytes received per node between the announcement and convergence.
    bytes_per_node: f64,
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    if !(2..=MAX_NODES).contains(&args.nodes) {
        bail!("--nodes must be between 2 and {MAX_NODES}");
    }
    if args.trials == 0 {
        bail!("--trials must be at least 1");
    }
    if args.interval < Duration::from_millis(10) {
        bail!("--interval must be at least 10ms");
    }
    crate::node::check_ttl("--ttl", args.ttl)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(demo(args))
}

fn config(args: &DemoArgs, i: usize, bootstrap: Vec<directory::Multiaddr>) -> node::NodeConfig {
    let mut c = node::NodeConfig::new(directory::Keypair::generate_ed25519());
    c.listen = vec![args.transport.listen()];
    c.bootstrap = bootstrap;
    c.api = None;
    c.mdns = false;
    c.interval = args.interval;
    c.ttl = args.ttl;
    c.fanout = args.fanout as usize;
    c.push_fanout = args.push_fanout;
    if args.announce_fanout.is_some() {
        c.announce_fanout = args.announce_fanout;
    }
    c.view_size = args.view_size;
    if args.view_size > 0 {
        // View connections are used every few rounds; what Kademlia's queries and the view's
        // rotation open need not outlive that by a minute (both ends' sockets live in this
        // one process).
        c.idle_timeout = DEMO_IDLE_TIMEOUT.max(args.interval * 5);
    }
    c.seed = Some(args.seed.wrapping_mul(1000).wrapping_add(i as u64));
    c
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let n = args.nodes as usize;
    let setup = Instant::now();
    let mut nodes = Vec::with_capacity(n);
    let mut addrs: Vec<directory::Multiaddr> = Vec::with_capacity(n);
    for i in 0..n {
        let boot = bench::latency::bootstrap_choice(args.seed, i, BOOTSTRAP_DEGREE)
            .into_iter()
            .map(|j| addrs[j].clone())
            .collect();
        let (node, addr) = bench::gossipdir::spawn(config(&args, i, boot))
            .await
            .with_context(|| format!("starting node {i}"))?;
        nodes.push(node);
        addrs.push(addr);
        if (i + 1) % SPAWN_PROGRESS_EVERY == 0 && i + 1 < n {
            eprintln!("{} of {n} nodes spawned in {:.1?}", i + 1, setup.elapsed());
        }
    }
    let spawned = setup.elapsed();
    // Joined: every node holds every node record. Larger federations take longer to start.
    let join_deadline = Duration::from_secs(60) + Duration::from_millis(200) * args.nodes;
    bench::gossipdir::wait_joined(&nodes, join_deadline, |how_far| {
        eprintln!("joining for {:.1?}: {how_far}", setup.elapsed() - spawned)
    })
    .await?;
    let joined = setup.elapsed();
    let at_join = Usage::now();
    eprintln!("{n} nodes spawned in {spawned:.2?}, joined in {joined:.2?}");
    let idle = if args.idle.is_zero() {
        None
    } else {
        let bytes_before = received_bytes(&nodes).await?;
        let before = Usage::now();
        tokio::time::sleep(args.idle).await;
        let after = Usage::now();
        let bytes = received_bytes(&nodes).await?.saturating_sub(bytes_before);
        let secs = after.at.duration_since(before.at).as_secs_f64();
        let idle = Idle {
            cpu_pct_per_node: before.cpu_pct_per_node(&after, n),
            bytes_per_node_per_sec: bytes as f64 / n as f64 / secs,
        };
        eprintln!(
            "idle for {:.1?}: {:.3} % of a core and {:.0} B/s of gossip received per node",
            args.idle, idle.cpu_pct_per_node, idle.bytes_per_node_per_sec
        );
        Some(idle)
    };
    eprintln!("running {} trials", args.trials);
    let at_trials = Usage::now();

    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let mut trials = Vec::new();
    let deadline = args.interval * (args.max_rounds + 1);
    for t in 0..args.trials {
        let origin = rng.gen_range(0..n);
        let capability = format!("demo-trial-{t}");
        let origin_client = nodes[origin].client.clone();
        // Read every node's counters first: under load that takes a while, which must not
        // fall between the round count and the clock.
        let bytes_before = received_bytes(&nodes).await?;
        let mut arrivals = bench::gossipdir::arrivals(&nodes, &capability);
        let start_round = origin_client.status().await?.round;
        let origin_round = RoundWatch::start(origin_client.clone(), start_round, args.interval);
        let start = Instant::now();
        origin_client
            .announce(node::Announce {
                name: format!("demo-{t}"),
                capabilities: vec![capability.clone()],
                endpoint: Some(format!("demo://node-{origin}")),
                ..Default::default()
            })
            .await?;
        let mut arrived_at = Vec::with_capacity(n);
        let mut before_first_tick = 0u32;
        let until = tokio::time::Instant::from_std(start + deadline);
        let trial = loop {
            // Arrivals come from the nodes' change feeds: nothing is polled, the measurement
            // takes no CPU from the nodes it measures.
            let arrived = match tokio::time::timeout_at(until, arrivals.next()).await {
                Ok(Some(arrival)) => arrival.map(|_| true)?,
                Ok(None) | Err(_) => false,
            };
            let wall = start.elapsed();
            let mut ticks = 0;
            if arrived {
                arrived_at.push(wall);
                ticks = origin_round.get().saturating_sub(start_round) as u32;
                if ticks == 0 {
                    before_first_tick += 1;
                }
            }
            let done = arrived_at.len() == n;
            if done || !arrived || ticks > args.max_rounds {
                let bytes = received_bytes(&nodes).await?.saturating_sub(bytes_before);
                break Trial {
                    rounds: done.then_some(ticks),
                    wall,
                    before_first_tick,
                    // The k-th of n nodes to hold it, for a fraction k / n of them.
                    half: arrived_at.get(n.div_ceil(2) - 1).copied(),
                    nine_tenths: arrived_at.get((n * 9).div_ceil(10) - 1).copied(),
                    ninety_nine: arrived_at.get((n * 99).div_ceil(100) - 1).copied(),
                    bytes_per_node: bytes as f64 / n as f64,
                };
            }
        };
        eprintln!(
            "trial {t}: origin node {origin}, {} round(s), {:.1?} (half of the nodes: {:.1?}, nine tenths: {:.1?}, 99 %: {:.1?}), {} of {n} nodes held it before the first round",
            trial
                .rounds
                .map_or("not converged".to_owned(), |r| r.to_string()),
            trial.wall,
            trial.half.unwrap_or_default(),
            trial.nine_tenths.unwrap_or_default(),
            trial.ninety_nine.unwrap_or_default(),
            trial.before_first_tick
        );
        trials.push((origin, trial));
    }
    let at_end = Usage::now();
    let conns = connections(&nodes).await?;
    for node in nodes {
        node.abort();
    }

    let walls: Vec<f64> = trials
        .iter()
        .filter(|(_, t)| t.rounds.is_some())
        .map(|(_, t)| t.wall.as_secs_f64() * 1000.0)
        .collect();
    let worst_ms = walls
        .iter()
        .copied()
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    let best_ms = walls
        .iter()
        .copied()
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.min(x))));
    let avg_ms = (!walls.is_empty()).then(|| walls.iter().sum::<f64>() / walls.len() as f64);
    let zero_round = trials.iter().filter(|(_, t)| t.rounds == Some(0)).count();
    let bytes_per_node =
        trials.iter().map(|(_, t)| t.bytes_per_node).sum::<f64>() / trials.len().max(1) as f64;
    let results = trials
        .iter()
        .enumerate()
        .map(|(i, (origin, t))| sim::TrialResult {
            seed: args.seed + i as u64,
            rounds: t.rounds,
            extra: Some(json!({
                "origin": origin,
                "wall_ms": t.wall.as_secs_f64() * 1000.0,
                "half_of_the_nodes_ms": t.half.map(|h| h.as_secs_f64() * 1000.0),
                "nine_tenths_of_the_nodes_ms": t.nine_tenths.map(|h| h.as_secs_f64() * 1000.0),
                "ninety_nine_percent_of_the_nodes_ms": t.ninety_nine.map(|h| h.as_secs_f64() * 1000.0),
                "holders_before_first_round": t.before_first_tick,
                "gossip_bytes_received_per_node": t.bytes_per_node,
            })),
        })
        .collect();
    let params = sim::SimParams {
        nodes: args.nodes,
        fanout: args.fanout,
        mode: sim::Mode::PushPull,
        trials: args.trials,
        seed: args.seed,
        max_rounds: args.max_rounds,
        ..Default::default()
    };
    let extra = json!({
        "transport": args.transport.describe(),
        "interval_ms": args.interval.as_millis() as u64,
        "ttl_ms": args.ttl.as_millis() as u64,
        "push_fanout": args.push_fanout,
        "announce_fanout": args.announce_fanout,
        "rounds_counted": "ticks of the announcing node between the announcement and the last node holding the record",
        "zero_round_trials": zero_round,
        "wall_ms": { "worst": worst_ms, "average": avg_ms, "best": best_ms },
        "gossip_bytes_received_per_node_per_trial": bytes_per_node,
        "bytes_counted": "encoded sync-protocol messages (periodic exchanges and pushes) received between the announcement and convergence, no transport framing",
        "view_size": args.view_size,
        "bootstrap": format!("each node to {BOOTSTRAP_DEGREE} random earlier nodes"),
        "spawned_secs": spawned.as_secs_f64(),
        "joined_secs": joined.as_secs_f64(),
        "process": {
            "cpu_secs_until_joined": at_join.cpu_secs,
            "cpu_pct_of_a_core_per_node_during_trials": at_trials.cpu_pct_per_node(&at_end, n),
            "idle": idle.as_ref().map(|i| json!({
                "secs": args.idle.as_secs_f64(),
                "cpu_pct_of_a_core_per_node": i.cpu_pct_per_node,
                "gossip_bytes_received_per_node_per_sec": i.bytes_per_node_per_sec,
            })),
            "rss_mib_per_node": at_end.rss_kib as f64 / 1024.0 / n as f64,
            "peak_rss_mib": at_end.peak_kib as f64 / 1024.0,
            "open_fds_at_join": at_join.fds,
            "open_fds_at_end": at_end.fds,
            "connections_per_node_at_end": { "average": conns.0, "most": conns.1 },
        },
    });
    let report = sim::Report::new("libp2p", &params, results, Some(extra));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print!("{}", report.to_table());
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1} ms"));
    println!();
    print!(
        "{}",
        crate::client::table(
            &["Wall clock", "Value"],
            &[
                vec!["Worst-case convergence".into(), ms(worst_ms)],
                vec!["Average convergence".into(), ms(avg_ms)],
                vec!["Best-case convergence".into(), ms(best_ms)],
                vec![
                    "Round interval".into(),
                    format!("{} ms", args.interval.as_millis())
                ],
                vec![
                    "Gossip bytes received per node per trial".into(),
                    format!("{bytes_per_node:.0} B"),
                ],
                vec![
                    "Trials done before the first round".into(),
                    format!("{zero_round}/{} (rumor pushes)", args.trials),
                ],
            ]
        )
    );
    println!();
    let mib = |kib: u64| kib as f64 / 1024.0;
    print!(
        "{}",
        crate::client::table(
            &["Process (all nodes)", "Value"],
            &[
                vec![
                    "Spawned / joined (every node holds every node record)".into(),
                    format!("{spawned:.1?} / {joined:.1?}"),
                ],
                vec![
                    "Partial view".into(),
                    if args.view_size == 0 {
                        "off (every member)".to_owned()
                    } else {
                        format!("{} members", args.view_size)
                    },
                ],
                vec![
                    "CPU until joined".into(),
                    format!("{:.1} s", at_join.cpu_secs)
                ],
                vec![
                    "CPU per node during the trials".into(),
                    format!("{:.2} % of a core", at_trials.cpu_pct_per_node(&at_end, n)),
                ],
                vec![
                    "Idle, per node: CPU / gossip received".into(),
                    idle.as_ref()
                        .map_or("not measured (--idle)".to_owned(), |i| {
                            format!(
                                "{:.3} % of a core / {:.0} B/s",
                                i.cpu_pct_per_node, i.bytes_per_node_per_sec
                            )
                        }),
                ],
                vec![
                    "Resident memory (per node) / peak".into(),
                    format!(
                        "{:.0} MiB ({:.2} MiB) / {:.0} MiB",
                        mib(at_end.rss_kib),
                        mib(at_end.rss_kib) / n as f64,
                        mib(at_end.peak_kib)
                    ),
                ],
                vec![
                    "Open descriptors at join / end".into(),
                    format!("{} / {}", at_join.fds, at_end.fds),
                ],
                vec![
                    "Connections per node at end (avg / most)".into(),
                    format!("{:.1} / {}", conns.0, conns.1),
                ],
            ]
        )
    );
    Ok(())
}

/// The round of one node, as a task that asks for it every [`RoundWatch::SAMPLES`]th of a
/// round keeps it (asking at each arrival held up the arrivals after it by a status round
/// trip each, seconds in all at N = 1,000); stops when dropped.
struct RoundWatch {
    round: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RoundWatch {
    const SAMPLES: u32 = 50;

    fn start(client: node::Client, round: u64, interval: Duration) -> RoundWatch {
        let cell = Arc::new(AtomicU64::new(round));
        let latest = cell.clone();
        let every = (interval / Self::SAMPLES).max(Duration::from_millis(1));
        let task = tokio::spawn(async move {
            while let Ok(status) = client.status().await {
                latest.store(status.round, Ordering::Relaxed);
                tokio::time::sleep(every).await;
            }
        });
        RoundWatch { round: cell, task }
    }

    fn get(&self) -> u64 {
        self.round.load(Ordering::Relaxed)
    }
}

impl Drop for RoundWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A window in which nothing was announced.
struct Idle {
    cpu_pct_per_node: f64,
    bytes_per_node_per_sec: f64,
}

/// What the whole process (every node) has used so far, from `/proc` (Linux; zero elsewhere).
#[derive(Debug, Clone, Copy)]
struct Usage {
    at: Instant,
    cpu_secs: f64,
    rss_kib: u64,
    peak_kib: u64,
    fds: usize,
}

impl Usage {
    fn now() -> Usage {
        let pid = std::process::id();
        let (rss_kib, peak_kib) = bench::memory::proc_memory_kib(pid).unwrap_or((0, 0));
        Usage {
            at: Instant::now(),
            cpu_secs: bench::memory::proc_cpu_secs(pid).unwrap_or(0.0),
            rss_kib,
            peak_kib,
            fds: bench::memory::proc_open_fds(pid).unwrap_or(0),
        }
    }

    /// Share of one core used per node between `self` and `later`, in percent.
    fn cpu_pct_per_node(&self, later: &Usage, n: usize) -> f64 {
        let secs = later.at.duration_since(self.at).as_secs_f64().max(1e-9);
        (later.cpu_secs - self.cpu_secs) / secs * 100.0 / n as f64
    }
}

/// Direct connections per node: (average, most).
async fn connections(nodes: &[node::Node]) -> anyhow::Result<(f64, usize)> {
    let direct: Vec<usize> = bench::gossipdir::statuses(nodes)
        .await?
        .iter()
        .map(|s| s.connections.direct)
        .collect();
    let average = direct.iter().sum::<usize>() as f64 / nodes.len().max(1) as f64;
    Ok((average, direct.into_iter().max().unwrap_or(0)))
}

/// Sync-protocol bytes received so far, summed over every node.
async fn received_bytes(nodes: &[node::Node]) -> anyhow::Result<u64> {
    let statuses = bench::gossipdir::statuses(nodes).await?;
    Ok(statuses.iter().map(|s| s.gossip_bytes.received).sum())
}
