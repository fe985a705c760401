//! `gossipdir bench memory`: resident memory and idle CPU of a real `gossipdir node` daemon
//! (a separate process) holding many live records (issue 6: 100,000 records under 200 MiB; an
//! idle daemon with a 1 s interval under 1 % of a core).
//!
//! The bench starts the daemon as a child process on 127.0.0.1 (TCP only, mDNS off, API on a
//! free loopback port, a temporary data directory), measures it empty, then feeds it signed
//! specialist records of many owners (at most `--per-owner` each, under the store's cap of 64)
//! with the gossip protocol's `Push` requests over libp2p (TCP + noise + yamux, the node crate's
//! codec), from a bare feeder swarm that holds the owners' keys. The daemon decodes, checks,
//! batch-verifies and merges them exactly as gossip from any peer. The feeder runs no identify,
//! so the daemon never picks it as a gossip partner and sends nothing on its own. Pushes are
//! paced under the node's per-peer cap of records read per round (20,000): a chunk per round.
//! Once the daemon's API reports every record, the feeder asks it for a `Summary` (as a peer
//! starting an exchange would), so the Negentropy snapshot of the full store is built and held
//! too. Then the bench reads `VmRSS` and `VmHWM` from `/proc/<pid>/status` and the daemon's CPU
//! (utime + stime) over an idle window, and finally once more after one `GET /v1/records` that
//! lists every record (the biggest answer the API gives).
//!
//! The store holds at most 100,000 records, the daemon's own node record included: the default
//! `--records 100000` feeds 99,999 specialists, so that the daemon holds 100,000 live records.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use directory::{Keypair, Multiaddr, PeerId, Record};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use node::event_loop::now_ms;
use serde::Serialize;

use crate::api_load::{Feeder, batches};

/// Lifetime of the fed records (the directory's maximum): they stay live for the whole run.
const RECORD_TTL_MS: u64 = 3_600_000;
/// Records pushed per round: under the node's `max_records_per_peer_per_round` (20,000).
const CHUNK_PER_ROUND: usize = 19_000;
/// How long the daemon may take to start, and to hold every record.
const START_DEADLINE: Duration = Duration::from_secs(30);
const LOAD_DEADLINE: Duration = Duration::from_secs(300);
/// `/proc/<pid>/stat` counts clock ticks of 1/100 s (USER_HZ on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// Resident memory of a real daemon holding many records, and its idle CPU.
#[derive(clap::Args, Debug, Clone)]
pub struct MemoryArgs {
    /// Specialist records to feed (the daemon's own node record comes on top; the store holds
    /// at most 100,000 in all).
    #[arg(long, default_value_t = 99_999)]
    pub records: usize,
    /// Records per owner key (the store caps an owner at 64).
    #[arg(long, default_value_t = 50)]
    pub per_owner: usize,
    /// The `gossipdir` binary to run as the daemon [default: this executable].
    #[arg(long, value_name = "PATH")]
    pub bin: Option<PathBuf>,
    /// Round interval of the daemon.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Length of each idle window over which CPU is measured.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = humantime::parse_duration)]
    pub idle: Duration,
    /// Seed of the owner keys.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the JSON report instead of the table.
    #[arg(long)]
    pub json: bool,
}

impl Default for MemoryArgs {
    fn default() -> Self {
        Self {
            records: 99_999,
            per_owner: 50,
            bin: None,
            interval: Duration::from_secs(1),
            idle: Duration::from_secs(20),
            seed: 1,
            json: false,
        }
    }
}

/// Memory and CPU of the daemon at one moment or over one window.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Live records the daemon's API reports.
    pub records: usize,
    pub vm_rss_kib: u64,
    /// Peak resident memory so far.
    pub vm_hwm_kib: u64,
    /// CPU over the idle window before the sample, % of one core.
    pub idle_cpu_pct: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    pub records_fed: usize,
    pub owners: usize,
    pub interval_ms: u64,
    pub idle_window_ms: u64,
    /// Mean encoded size of a fed record on the wire.
    pub record_wire_bytes: f64,
    pub empty: Sample,
    pub loaded: Sample,
    pub after_full_query: Sample,
    /// From the first push to the API reporting every record.
    pub load_secs: f64,
    /// Daemon CPU seconds spent while loading (decode, checks, signatures, merge).
    pub load_cpu_secs: f64,
    /// Records the daemon's `PushAck`s counted as new.
    pub acked: u64,
    /// Bytes of the `GET /v1/records` answer listing every record.
    pub full_query_bytes: usize,
    /// (loaded − empty) RSS per record.
    pub rss_bytes_per_record: f64,
    /// Resident memory (peak included) under 200 MiB while holding the records, before the
    /// full listing.
    pub under_200_mib: bool,
}

pub fn run_memory(args: MemoryArgs) -> anyhow::Result<()> {
    let report = memory(&args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", to_table(&report));
    }
    Ok(())
}

/// Runs the whole measurement; the daemon and its directory are gone when this returns.
pub fn memory(args: &MemoryArgs) -> anyhow::Result<MemoryReport> {
    if args.per_owner == 0 || args.per_owner > 64 {
        bail!("--per-owner must be 1 to 64");
    }
    if args.records == 0 || args.records > 100_000 {
        bail!("--records must be 1 to 100,000 (the store's cap, node record included)");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(args))
}

/// The daemon child process and its directory; both go when this is dropped.
struct Daemon {
    child: Child,
    dir: PathBuf,
    api: SocketAddr,
    p2p_port: u16,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("no free loopback port")?;
    Ok(l.local_addr()?.port())
}

impl Daemon {
    fn start(args: &MemoryArgs) -> anyhow::Result<Daemon> {
        let bin = match &args.bin {
            Some(b) => b.clone(),
            None => std::env::current_exe().context("cannot find this executable")?,
        };
        let dir = std::env::temp_dir().join(format!(
            "gossipdir-bench-memory-{}-{}",
            std::process::id(),
            now_ms()
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let api = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
        let p2p_port = free_port()?;
        let log = std::fs::File::create(dir.join("node.log"))?;
        let child = Command::new(&bin)
            .arg("node")
            .args(["--listen", &format!("/ip4/127.0.0.1/tcp/{p2p_port}")])
            .args(["--api", &api.to_string()])
            .arg("--data-dir")
            .arg(&dir)
            .arg("--no-mdns")
            .args([
                "--interval",
                &humantime::format_duration(args.interval).to_string(),
            ])
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or("warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {} node", bin.display()))?;
        Ok(Daemon {
            child,
            dir,
            api,
            p2p_port,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        let _ = std::fs::File::open(self.dir.join("node.log"))
            .and_then(|mut f| f.read_to_string(&mut text));
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// (VmRSS, VmHWM) in KiB.
    fn memory_kib(&self) -> anyhow::Result<(u64, u64)> {
        proc_memory_kib(self.pid()).context("the daemon is gone")
    }

    /// utime + stime of the daemon, in seconds.
    fn cpu_secs(&self) -> anyhow::Result<f64> {
        proc_cpu_secs(self.pid()).context("the daemon is gone")
    }
}

/// (VmRSS, VmHWM) of process `pid` in KiB, from `/proc/<pid>/status` (Linux).
pub fn proc_memory_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

/// utime + stime of process `pid` in seconds, from `/proc/<pid>/stat` (Linux).
pub fn proc_cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    let close = text.rfind(')').context("bad stat line")?;
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let utime: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let stime: f64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    Ok((utime + stime) / TICKS_PER_SEC)
}

/// Open file descriptors of process `pid` (Linux).
pub fn proc_open_fds(pid: u32) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("cannot read /proc/{pid}/fd"))?
        .count())
}

struct Api {
    http: HttpClient<HttpConnector, Empty<Bytes>>,
    base: String,
}

impl Api {
    async fn get(&self, path: &str) -> anyhow::Result<Bytes> {
        let uri: hyper::Uri = format!("{}{path}", self.base).parse()?;
        let response = tokio::time::timeout(Duration::from_secs(30), self.http.get(uri))
            .await
            .context("API timeout")??;
        if !response.status().is_success() {
            bail!("API answered {}", response.status());
        }
        Ok(response.into_body().collect().await?.to_bytes())
    }

    async fn status(&self) -> anyhow::Result<node::Status> {
        Ok(serde_json::from_slice(&self.get("/v1/status").await?)?)
    }
}

fn sign_all(args: &MemoryArgs) -> (Vec<Record>, usize) {
    let owners: Vec<Keypair> = (0..args.records.div_ceil(args.per_owner))
        .map(|o| {
            directory::sample::keypair(
                args.seed
                    .wrapping_mul(1 << 32)
                    .wrapping_add(0x3e30_0000)
                    .wrapping_add(o as u64),
            )
        })
        .collect();
    let now = now_ms();
    let records = (0..args.records)
        .map(|i| {
            // Two capabilities of 100 and 10 values, as in `bench api`.
            let caps = [
                format!("skill-{:02}", i % 100),
                format!("area-{}", (i / 100) % 10),
            ];
            directory::sample::specialist(
                &owners[i / args.per_owner],
                &format!("mem-{i:06}"),
                &[&caps[0], &caps[1]],
                1,
                now,
                RECORD_TTL_MS,
            )
        })
        .collect();
    (records, owners.len())
}

async fn idle_sample(daemon: &Daemon, api: &Api, window: Duration) -> anyhow::Result<Sample> {
    let cpu0 = daemon.cpu_secs()?;
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let cpu1 = daemon.cpu_secs()?;
    let secs = t0.elapsed().as_secs_f64();
    let records = api.status().await?.records;
    let (rss, hwm) = daemon.memory_kib()?;
    Ok(Sample {
        records,
        vm_rss_kib: rss,
        vm_hwm_kib: hwm,
        idle_cpu_pct: Some((cpu1 - cpu0) / secs * 100.0),
    })
}

async fn run(args: &MemoryArgs) -> anyhow::Result<MemoryReport> {
    let (records, owners) = tokio::task::block_in_place(|| sign_all(args));
    let record_wire_bytes =
        records.iter().map(|r| r.wire_len()).sum::<usize>() as f64 / records.len() as f64;
    eprintln!(
        "signed {} records of {owners} owners ({record_wire_bytes:.0} B each on the wire)",
        records.len()
    );

    let daemon = Daemon::start(args)?;
    let api = Api {
        http: HttpClient::builder(TokioExecutor::new()).build_http(),
        base: format!("http://{}", daemon.api),
    };
    let started = Instant::now();
    let status = loop {
        match api.status().await {
            Ok(s) if !s.listen_addrs.is_empty() && s.records >= 1 => break s,
            _ if started.elapsed() > START_DEADLINE => {
                bail!("the daemon did not start:\n{}", daemon.log_tail())
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let peer: PeerId = status.peer_id.parse().context("bad peer id")?;
    eprintln!(
        "daemon {peer} (pid {}) up; idle window, empty",
        daemon.pid()
    );
    let empty = idle_sample(&daemon, &api, args.idle).await?;

    let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", daemon.p2p_port).parse()?;
    let feeder = Feeder::start(vec![(peer, addr.clone())], Duration::from_secs(60)).await?;
    let cpu0 = daemon.cpu_secs()?;
    let load_start = Instant::now();
    let mut acked = 0u64;
    let mut pending: Vec<usize> = (0..records.len()).collect();
    while !pending.is_empty() {
        if load_start.elapsed() > LOAD_DEADLINE {
            bail!("the daemon did not take every record within {LOAD_DEADLINE:?}");
        }
        let mut refused = Vec::new();
        for chunk in pending.chunks(CHUNK_PER_ROUND) {
            let round = api.status().await?.round;
            let chunk_records: Vec<Record> = chunk.iter().map(|i| records[*i].clone()).collect();
            let mut offset = 0;
            for batch in batches(chunk_records.iter()) {
                let n = batch.len();
                match feeder.request(peer, gossip::Request::Push(batch)).await? {
                    gossip::Response::PushAck(new) => {
                        acked += u64::from(new);
                        if (new as usize) < n {
                            // Some were deferred past a per-round cap: push them again later.
                            refused.extend_from_slice(&chunk[offset..offset + n]);
                        }
                    }
                    other => bail!("unexpected answer to a push: {other:?}"),
                }
                offset += n;
            }
            // The next chunk waits for the next round (the per-round cap is reset at a tick).
            while api.status().await?.round == round {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        pending = refused;
        // A batch only partly new may hold records already merged: those are refused again
        // as "not newer", cheaply, and the loop ends when the API reports every record.
        if api.status().await?.specialists >= records.len() {
            break;
        }
    }
    let load_secs = load_start.elapsed().as_secs_f64();
    let load_cpu_secs = daemon.cpu_secs()? - cpu0;
    let held = api.status().await?;
    if held.specialists < records.len() {
        bail!(
            "the daemon holds {} of {} records",
            held.specialists,
            records.len()
        );
    }
    // A peer starting an exchange: the daemon builds and caches the snapshot of its store.
    let summary = feeder
        .request(peer, gossip::Request::Summary(0, vec![0u8; 16].into()))
        .await?;
    eprintln!(
        "daemon holds {} records after {load_secs:.1} s ({load_cpu_secs:.1} CPU s); summary answer {summary:?}; idle window, loaded",
        held.records
    );
    let loaded = idle_sample(&daemon, &api, args.idle).await?;

    let full = api.get("/v1/records").await?;
    let full_query_bytes = full.len();
    drop(full);
    eprintln!("listed every record ({full_query_bytes} B); idle window, after the query");
    let after_full_query = idle_sample(&daemon, &api, args.idle).await?;

    let rss_bytes_per_record =
        (loaded.vm_rss_kib.saturating_sub(empty.vm_rss_kib) * 1024) as f64 / records.len() as f64;
    // The goal is about holding the records; the transient peak of one answer listing all of
    // them (tens of MB of JSON) is reported apart, in `after_full_query`.
    let under = loaded.vm_hwm_kib < 200 * 1024;
    Ok(MemoryReport {
        records_fed: records.len(),
        owners,
        interval_ms: args.interval.as_millis() as u64,
        idle_window_ms: args.idle.as_millis() as u64,
        record_wire_bytes,
        empty,
        loaded,
        after_full_query,
        load_secs,
        load_cpu_secs,
        acked,
        full_query_bytes,
        rss_bytes_per_record,
        under_200_mib: under,
    })
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub fn to_table(r: &MemoryReport) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "gossipdir node daemon fed {} records of {} owners ({:.0} B each on the wire), {} ms rounds\n\n",
        r.records_fed, r.owners, r.record_wire_bytes, r.interval_ms
    ));
    out.push_str("| state | live records | VmRSS | VmHWM (peak) | idle CPU, % of a core |\n");
    out.push_str("|---|---|---|---|---|\n");
    for (name, s) in [
        ("empty (own node record)", &r.empty),
        ("loaded, snapshot built", &r.loaded),
        ("after listing every record", &r.after_full_query),
    ] {
        out.push_str(&format!(
            "| {name} | {} | {} | {} | {} |\n",
            s.records,
            mib(s.vm_rss_kib),
            mib(s.vm_hwm_kib),
            s.idle_cpu_pct.map_or("-".into(), |c| format!("{c:.2}")),
        ));
    }
    out.push_str(&format!(
        "\nload: {:.1} s, {:.1} CPU s in the daemon, {} records acked as new; RSS per record {:.0} B; \
         full listing {} B; idle windows {} ms; under 200 MiB: {}\n",
        r.load_secs,
        r.load_cpu_secs,
        r.acked,
        r.rss_bytes_per_record,
        r.full_query_bytes,
        r.idle_window_ms,
        if r.under_200_mib { "yes" } else { "NO" }
    ));
    out
}
