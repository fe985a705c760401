//! `gossipdir bench …`: measurements of real work, printed for a person or as JSON.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Subcommand;
use serde::Serialize;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Reconcile two directories of N records that differ in D, through the real engine and
    /// codec, and report the bytes each way, messages, round trips and time.
    Reconcile {
        /// Records in each directory.
        #[arg(long, default_value_t = 10_000)]
        records: u64,
        /// Records that differ (half only on each side).
        #[arg(long, default_value_t = 10)]
        diff: u64,
        /// Print one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Time and bytes until a new record reaches every node: N real gossipdir nodes against N
    /// libp2p gossipsub nodes, on 127.0.0.1 over TCP + noise + yamux (issue 8).
    Latency(::bench::LatencyArgs),
    /// Query a node's HTTP API at a fixed rate (open loop) while it gossips 10,000 signed
    /// records with real peers, all on 127.0.0.1; report latency percentiles, errors, bytes,
    /// the node's records, rounds and CPU.
    Api(::bench::ApiArgs),
    /// Side by side in one run (issue 6): the founding full-view exchange against ours (bytes
    /// per round at 1k / 10k records, steady and under churn), N chitchat instances against N
    /// gossipdir nodes (rounds, wall time, bytes for a new key to reach all), and gossipsub
    /// (time, bytes, late joiner).
    Compare(::bench::CompareArgs),
    /// Resident memory and idle CPU of a real `gossipdir node` daemon (a child process) fed
    /// up to 100,000 signed records over the gossip protocol (issue 6).
    Memory(::bench::memory::MemoryArgs),
}

#[derive(Serialize)]
struct ReconcileReport {
    records: u64,
    diff: u64,
    bytes_sent: u64,
    bytes_received: u64,
    messages: u64,
    round_trips: u64,
    /// Time of the exchange itself, both sides' work, snapshots already built.
    millis: f64,
    /// Time to build one side's reconciliation snapshot (once per store change).
    snapshot_millis: f64,
    /// Both sides held the same set afterwards.
    converged: bool,
}

pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Reconcile {
            records,
            diff,
            json,
        } => reconcile(records, diff, json),
        BenchCommand::Latency(args) => ::bench::run_latency(args),
        BenchCommand::Api(args) => ::bench::run_api(args),
        BenchCommand::Compare(args) => ::bench::run_compare(args),
        BenchCommand::Memory(args) => ::bench::memory::run_memory(args),
    }
}

fn reconcile(records: u64, diff: u64, json: bool) -> anyhow::Result<()> {
    if records > 1_000_000 {
        bail!("--records: at most 1000000");
    }
    if diff > 2 * records {
        bail!("--diff: at most twice --records ({})", 2 * records);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("system clock before 1970")?
        .as_millis() as u64;
    tracing::info!(records, diff, "signing and loading two directories");
    let (mut a, mut b) = gossip::pair::differing(records, diff, now);
    // Snapshots are rebuilt once per store change, not per exchange: time them apart.
    let started = Instant::now();
    a.summary();
    b.summary();
    let snapshot_millis = started.elapsed().as_secs_f64() * 1000.0 / 2.0;
    let started = Instant::now();
    let transfer = gossip::pair::exchange(&mut a, &mut b, now)?;
    let millis = started.elapsed().as_secs_f64() * 1000.0;
    let converged = a.store().len() == b.store().len()
        && a.store()
            .iter()
            .all(|r| b.store().get_by_id(&r.id()).is_some());
    let report = ReconcileReport {
        records,
        diff,
        bytes_sent: transfer.bytes_sent,
        bytes_received: transfer.bytes_received,
        messages: transfer.messages,
        round_trips: transfer.round_trips,
        millis,
        snapshot_millis,
        converged,
    };
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("records        {}", report.records);
        println!("diff           {}", report.diff);
        println!("bytes sent     {}", report.bytes_sent);
        println!("bytes received {}", report.bytes_received);
        println!("messages       {}", report.messages);
        println!("round trips    {}", report.round_trips);
        println!("time           {:.2} ms", report.millis);
        println!(
            "snapshot build {:.2} ms (per side, once per store change)",
            report.snapshot_millis
        );
        println!("converged      {}", report.converged);
    }
    if !converged {
        bail!("the two directories did not converge in one exchange");
    }
    Ok(())
}
