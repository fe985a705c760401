//! `gossipdir simulate`: the Bet 15 convergence experiment (issue 3).
//!
//! Runs seeded trials of a dissemination model (see the `gossipdir-sim` crate) and
//! prints the founding table (or a sweep table), optionally as JSON and as an SVG plot.
//! Logs and progress go to stderr; the table or the JSON (`--json`) to stdout.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};

/// Who informs whom in one exchange.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeArg {
    /// An informed caller informs the callee.
    Push,
    /// An informed callee informs the caller.
    Pull,
    /// Both sides end with the union of what they held at the start of the round.
    PushPull,
}

impl From<ModeArg> for sim::Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Push => sim::Mode::Push,
            ModeArg::Pull => sim::Mode::Pull,
            ModeArg::PushPull => sim::Mode::PushPull,
        }
    }
}

/// Which model of dissemination to simulate.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelArg {
    /// Abstract random phone-call model: who holds the announcement, nothing else.
    Rumor,
    /// N real gossip engines exchanging signed records through the wire codec (push-pull).
    Engine,
}

/// Simulate convergence of the gossip directory (Bet 15).
#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// Number of nodes N (ignored with --sweep).
    #[arg(long, default_value_t = 10)]
    pub nodes: u32,
    /// Peers each node contacts per round, K (clamped to N-1 when N is smaller).
    #[arg(long, default_value_t = 2)]
    pub fanout: u32,
    /// Number of trials; trial t uses seed SEED + t.
    #[arg(long, default_value_t = 20)]
    pub trials: u32,
    /// Seed of the first trial.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Exchange mode.
    #[arg(long, value_enum, default_value_t = ModeArg::PushPull)]
    pub mode: ModeArg,
    /// Dissemination model.
    #[arg(long, value_enum, default_value_t = ModelArg::Rumor)]
    pub model: ModelArg,
    /// Probability that an exchange is lost, in [0, 1].
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub loss: f64,
    /// Fraction of non-origin nodes that accept no inbound exchange, in [0, 1].
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    pub unreachable: f64,
    /// Fraction of non-origin nodes replaced by fresh nodes after each round, in [0, 1).
    #[arg(long, value_name = "C", default_value_t = 0.0)]
    pub churn: f64,
    /// Number of distinct announcements made in round 0, each by its own origin.
    #[arg(long, value_name = "U", default_value_t = 1)]
    pub updates: u32,
    /// Fraction of adversarial nodes, in [0, 1) (engine model only).
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    pub adversaries: f64,
    /// Engine model: what the adversaries do: all, forge, replay, immortal, flood, withhold,
    /// clock-lie.
    #[arg(long, value_name = "KIND", default_value = "all")]
    pub adversary_kind: sim::AdversaryKind,
    /// A trial not converged after this many rounds counts as not converged.
    #[arg(long, value_name = "R", default_value_t = sim::DEFAULT_MAX_ROUNDS)]
    pub max_rounds: u32,
    /// Run for each of these N instead of --nodes (comma-separated).
    #[arg(long, value_name = "N1,N2,...", value_delimiter = ',')]
    pub sweep: Vec<u32>,
    /// Also write the JSON report (an array with --sweep) to this file.
    #[arg(long, value_name = "FILE.json")]
    pub out: Option<PathBuf>,
    /// Draw rounds against N to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Print the JSON report to stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Engine model: peers news is pushed to at once (0 = pure periodic push-pull).
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub push_fanout: usize,
    /// Engine model: further peers a push acknowledged as news goes on to (rumor feedback)
    /// [default: the engine's].
    #[arg(long, value_name = "F")]
    pub push_feedback: Option<u32>,
    /// Engine model: further peers that get only the ids of news and fetch what they lack
    /// (lazy push; 0 = off) [default: ⌈ln N⌉ + 3].
    #[arg(long, value_name = "K")]
    pub announce_fanout: Option<usize>,
    /// Engine model: one-way latency of every message, in simulated ms.
    #[arg(long, value_name = "L", default_value_t = 5)]
    pub latency_ms: u64,
    /// Engine model: how long after a lost message the requester sees it fail, simulated ms.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Engine model: probability that any one message (request or response) is lost, a
    /// harsher fault than --loss, which loses whole exchanges.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub message_loss: f64,
    /// Engine model: after convergence, measure how long a withdrawal and an expiry
    /// (a record with a 5 s TTL) take to disappear from every honest node.
    #[arg(long)]
    pub measure_removal: bool,
    /// Engine model: each node gossips with a partial view of this many members (0 = every
    /// member).
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub view: usize,
}

/// Runs `gossipdir simulate`.
pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let engine_model = sim::EngineModel {
        push_fanout: args.push_fanout,
        push_feedback: args
            .push_feedback
            .unwrap_or(sim::EngineModel::default().push_feedback),
        announce_fanout: args
            .announce_fanout
            .or(sim::EngineModel::default().announce_fanout),
        latency_ms: args.latency_ms,
        timeout_ms: args.timeout_ms,
        message_loss: args.message_loss,
        measure_removal: args.measure_removal,
        adversary_kind: args.adversary_kind,
        view_size: args.view,
        ..sim::EngineModel::default()
    };
    let model: &dyn sim::Model = match args.model {
        ModelArg::Rumor => {
            let defaults = sim::EngineModel::default();
            if args.push_fanout != defaults.push_fanout
                || args.latency_ms != defaults.latency_ms
                || args.timeout_ms != defaults.timeout_ms
                || args.message_loss != defaults.message_loss
                || args.push_feedback.is_some()
                || args.announce_fanout.is_some()
                || args.measure_removal
                || args.view != 0
                || args.adversary_kind != sim::AdversaryKind::All
            {
                bail!(
                    "--push-fanout, --latency-ms, --timeout-ms, --message-loss, \
                     --measure-removal, --view and --adversary-kind apply to --model engine only"
                );
            }
            &sim::RumorModel
        }
        ModelArg::Engine => &engine_model,
    };
    let sweep = !args.sweep.is_empty();
    let node_counts = if sweep {
        args.sweep.clone()
    } else {
        vec![args.nodes]
    };

    let mut all_params = Vec::with_capacity(node_counts.len());
    for &nodes in &node_counts {
        let params = sim::SimParams {
            nodes,
            fanout: args.fanout,
            mode: args.mode.into(),
            trials: args.trials,
            seed: args.seed,
            loss: args.loss,
            unreachable: args.unreachable,
            churn: args.churn,
            updates: args.updates,
            adversaries: args.adversaries,
            max_rounds: args.max_rounds,
        };
        params
            .validate()
            .and_then(|()| model.check(&params))
            .with_context(|| format!("invalid simulation parameters (N={nodes})"))?;
        if params.fanout > params.effective_fanout() && nodes > 1 {
            eprintln!(
                "note: N={nodes}: fanout {} clamped to N-1 = {}",
                params.fanout,
                params.effective_fanout()
            );
        }
        all_params.push(params);
    }

    // Roughly one second of work on this kind of machine: show a progress bar.
    let work: u64 = all_params
        .iter()
        .map(|p| u64::from(p.nodes) * u64::from(p.trials) * u64::from(p.effective_fanout()))
        .sum::<u64>()
        // An engine trial costs far more per node than a rumor trial.
        * if args.model == ModelArg::Engine { 10_000 } else { 1 };
    let total_trials: u64 = all_params.iter().map(|p| u64::from(p.trials)).sum();
    let progress = sim::progress::TrialProgress::new(total_trials, work >= 4_000_000);
    let threads = sim::default_threads();

    let started = Instant::now();
    let mut reports = Vec::with_capacity(all_params.len());
    for params in &all_params {
        progress.set_message(format!("N={}", params.nodes));
        let one = Instant::now();
        let report = sim::run_experiment(model, params, threads, &|_| progress.inc())?;
        if sweep {
            progress.log(&format!(
                "N={}: {} of {} trials converged in {:.2?}",
                params.nodes,
                report.converged,
                report.trials.len(),
                one.elapsed()
            ));
        }
        reports.push(report);
    }
    progress.finish();
    eprintln!(
        "simulated {} trial(s) on {threads} thread(s) in {:.2?}",
        total_trials,
        started.elapsed()
    );

    let json = if sweep {
        serde_json::to_string_pretty(&reports)?
    } else {
        serde_json::to_string_pretty(&reports[0])?
    };
    if let Some(path) = &args.out {
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.plot {
        sim::plot::plot_svg(path, &reports)?;
        eprintln!("wrote {}", path.display());
    }
    if args.json {
        println!("{json}");
    } else if sweep {
        print!("{}", sim::report::sweep_table(&reports));
    } else {
        print!("{}", reports[0].to_table());
    }
    Ok(())
}
