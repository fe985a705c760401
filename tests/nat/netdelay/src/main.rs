//! `netdelay`: a fixed packet delay for kernels without `sch_netem`.
//!
//! iptables sends packets to an NFQUEUE queue (`-j NFQUEUE --queue-num N`); this program reads
//! them from the queue (metadata only: the payload is never copied), holds each for `--delay`,
//! then gives it the verdict ACCEPT, so the kernel sends it on unchanged. Every packet gets the
//! same delay, so the order within the queue is kept (verdicts go out in arrival order).
//!
//! Memory is bounded: at most `--max-held` packets are held (each pins one small receive
//! buffer, about 4 KiB); a packet arriving while that many are held gets its verdict at once
//! (`--over-cap accept`, the default: it passes undelayed) or is dropped (`--over-cap drop`),
//! and is counted in the stats line as `over_cap`. The kernel-side queue is raised to
//! `--queue-maxlen` packets; should it fill up anyway, the kernel drops (NFQUEUE's default).
//!
//! The netlink socket is read without blocking and the loop sleeps at most 1 ms between polls,
//! so a packet is released between 0 and about 1 ms after its due time.
//!
//! Usage (inside the namespace whose traffic is to be delayed; needs CAP_NET_ADMIN):
//!
//! ```sh
//! iptables -t mangle -A FORWARD -j NFQUEUE --queue-num 0
//! netdelay --queue 0 --delay 200ms
//! ```

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use nfq::{Queue, Verdict};

/// Delays every packet of an NFQUEUE queue by a fixed time, then accepts it.
#[derive(Debug, Parser)]
#[command(name = "netdelay", version)]
struct Args {
    /// The NFQUEUE queue number (iptables `--queue-num`).
    #[arg(long, default_value_t = 0)]
    queue: u16,
    /// How long each packet is held before it is accepted (e.g. 200ms, 1s).
    #[arg(long, value_parser = humantime::parse_duration)]
    delay: Duration,
    /// Most packets held at once; beyond it packets get their verdict at once (see --over-cap).
    #[arg(long, default_value_t = 10_000)]
    max_held: usize,
    /// What happens to a packet arriving while --max-held packets are held.
    #[arg(long, value_enum, default_value_t = OverCap::Accept)]
    over_cap: OverCap,
    /// Length of the kernel's queue (packets waiting to be read by this program).
    #[arg(long, default_value_t = 65_536)]
    queue_maxlen: u32,
    /// How often a stats line is printed to stderr (only when something changed).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    stats_every: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OverCap {
    /// Accept the packet undelayed.
    Accept,
    /// Drop the packet.
    Drop,
}

/// Packets held until their due time, in arrival order (the delay is the same for all).
struct Held<T> {
    delay: Duration,
    cap: usize,
    packets: VecDeque<(Instant, T)>,
    /// Most packets held at once so far.
    peak: usize,
}

impl<T> Held<T> {
    fn new(delay: Duration, cap: usize) -> Self {
        Self {
            delay,
            cap,
            packets: VecDeque::new(),
            peak: 0,
        }
    }

    /// Holds a packet that arrived at `now`; gives it back when the cap is reached.
    fn push(&mut self, now: Instant, packet: T) -> Result<(), T> {
        if self.packets.len() >= self.cap {
            return Err(packet);
        }
        self.packets.push_back((now + self.delay, packet));
        self.peak = self.peak.max(self.packets.len());
        Ok(())
    }

    /// The next packet whose due time is `now` or earlier.
    fn pop_due(&mut self, now: Instant) -> Option<T> {
        match self.packets.front() {
            Some((due, _)) if *due <= now => self.packets.pop_front().map(|(_, p)| p),
            _ => None,
        }
    }

    /// When the next packet is due.
    fn next_due(&self) -> Option<Instant> {
        self.packets.front().map(|(due, _)| *due)
    }

    fn len(&self) -> usize {
        self.packets.len()
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Stats {
    received: u64,
    released: u64,
    over_cap: u64,
    verdict_errors: u64,
    recv_errors: u64,
}

/// Longest sleep between two polls of the queue.
const POLL: Duration = Duration::from_millis(1);

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netdelay: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> std::io::Result<()> {
    let q = args.queue;
    let mut queue = Queue::open()?;
    queue.bind(q)?;
    // Metadata only: the verdict does not need the payload, and held packets stay small.
    queue.set_copy_range(q, 0)?;
    queue.set_queue_max_len(q, args.queue_maxlen)?;
    queue.set_nonblocking(true);
    eprintln!(
        "netdelay: queue {q}, delay {}, max held {} (then {:?}), kernel queue {}",
        humantime::format_duration(args.delay),
        args.max_held,
        args.over_cap,
        args.queue_maxlen
    );

    let mut held = Held::new(args.delay, args.max_held);
    let mut stats = Stats::default();
    let mut printed = stats;
    let mut next_stats = Instant::now() + args.stats_every;
    loop {
        // Read everything waiting.
        loop {
            match queue.recv() {
                Ok(msg) => {
                    stats.received += 1;
                    if let Err(mut msg) = held.push(Instant::now(), msg) {
                        stats.over_cap += 1;
                        msg.set_verdict(match args.over_cap {
                            OverCap::Accept => Verdict::Accept,
                            OverCap::Drop => Verdict::Drop,
                        });
                        if queue.verdict(msg).is_err() {
                            stats.verdict_errors += 1;
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // A malformed or truncated message: count it, keep serving the queue.
                    stats.recv_errors += 1;
                    if stats.recv_errors <= 10 {
                        eprintln!("netdelay: recv: {e}");
                    }
                    break;
                }
            }
        }
        // Release what is due.
        let now = Instant::now();
        while let Some(mut msg) = held.pop_due(now) {
            msg.set_verdict(Verdict::Accept);
            match queue.verdict(msg) {
                Ok(()) => stats.released += 1,
                Err(e) => {
                    stats.verdict_errors += 1;
                    if stats.verdict_errors <= 10 {
                        eprintln!("netdelay: verdict: {e}");
                    }
                }
            }
        }
        if now >= next_stats {
            next_stats = now + args.stats_every;
            if stats != printed {
                printed = stats;
                eprintln!(
                    "netdelay: received {} released {} held {} (peak {}) over_cap {} verdict_errors {} recv_errors {}",
                    stats.received,
                    stats.released,
                    held.len(),
                    held.peak,
                    stats.over_cap,
                    stats.verdict_errors,
                    stats.recv_errors
                );
            }
        }
        let nap = held
            .next_due()
            .map_or(POLL, |due| due.saturating_duration_since(Instant::now()))
            .min(POLL);
        std::thread::sleep(nap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_come_out_after_the_delay_in_arrival_order() {
        let t0 = Instant::now();
        let mut held = Held::new(Duration::from_millis(200), 10);
        held.push(t0, 1).unwrap();
        held.push(t0 + Duration::from_millis(5), 2).unwrap();
        assert_eq!(held.pop_due(t0 + Duration::from_millis(199)), None);
        assert_eq!(held.next_due(), Some(t0 + Duration::from_millis(200)));
        assert_eq!(held.pop_due(t0 + Duration::from_millis(200)), Some(1));
        assert_eq!(held.pop_due(t0 + Duration::from_millis(200)), None);
        assert_eq!(held.pop_due(t0 + Duration::from_millis(300)), Some(2));
        assert_eq!(held.len(), 0);
        assert_eq!(held.peak, 2);
    }

    #[test]
    fn beyond_the_cap_packets_are_handed_back() {
        let t0 = Instant::now();
        let mut held = Held::new(Duration::from_millis(200), 2);
        held.push(t0, 1).unwrap();
        held.push(t0, 2).unwrap();
        assert_eq!(held.push(t0, 3), Err(3));
        assert_eq!(held.len(), 2);
        assert_eq!(held.pop_due(t0 + Duration::from_secs(1)), Some(1));
        held.push(t0, 4).unwrap();
    }

    #[test]
    fn arguments_parse() {
        let args = Args::try_parse_from(["netdelay", "--queue", "3", "--delay", "200ms"]).unwrap();
        assert_eq!(args.queue, 3);
        assert_eq!(args.delay, Duration::from_millis(200));
        assert_eq!(args.over_cap, OverCap::Accept);
        assert!(Args::try_parse_from(["netdelay", "--queue", "3"]).is_err());
    }
}
