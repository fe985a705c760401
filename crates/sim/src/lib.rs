//! Round-based convergence simulator for the gossip directory (`gossipdir simulate`).
//!
//! The founding experiment ("Bet 15"): `N` nodes, one holds a new announcement, every
//! round each node exchanges views with `K` random peers; convergence is the number of
//! rounds until every node holds it, measured over several seeded trials.
//!
//! The crate is split so that other models can be plugged in next to [`rumor`]:
//!
//! * [`SimParams`] — the experiment's parameters, validated by [`SimParams::validate`];
//! * [`Model`] — one trial of one model (the rumor model is [`rumor::RumorModel`]);
//! * [`run_trials`] / [`run_experiment`] — runs the trials on several threads, with
//!   per-trial results that do not depend on the thread count;
//! * [`report::Report`] — the serialisable outcome, with the STRICT / LENIENT /
//!   CATASTROPHIC criteria and the human tables;
//! * [`plot::plot_svg`] — the rounds-against-N chart;
//! * [`progress::TrialProgress`] — a stderr progress bar for the binary.

pub mod engine;
pub mod plot;
pub mod progress;
pub mod report;
pub mod rumor;

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

pub use engine::{AdversaryKind, EngineModel};
pub use report::{Criteria, Report, Theory, TrialResult};
pub use rumor::RumorModel;

/// Name of the founding experiment, written into every report.
pub const EXPERIMENT: &str = "bet15";

/// The founding CATASTROPHIC threshold (at N = 10): a trial not converged within this many
/// rounds, whatever `max_rounds` is.
pub const CATASTROPHIC_ROUNDS: u32 = 10;

/// The catastrophic threshold at `n` nodes: the founding 10 rounds (2.5 × the bound at N = 10),
/// scaled as twice the bound ⌈log₂N⌉ beyond N = 32, where 10 rounds would fall below
/// the bound itself (N > 1,024) and could no longer mean "pathological".
pub fn catastrophic_rounds(nodes: u32) -> u32 {
    CATASTROPHIC_ROUNDS.max(2 * ceil_log2(nodes))
}

/// Default for [`SimParams::max_rounds`].
pub const DEFAULT_MAX_ROUNDS: u32 = 64;

/// Who informs whom in one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// An informed caller informs the callee.
    Push,
    /// An informed callee informs the caller.
    Pull,
    /// Both sides end up with the union of what they held at the start of the round.
    PushPull,
}

impl Mode {
    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Push => "push",
            Mode::Pull => "pull",
            Mode::PushPull => "push-pull",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parameters of one experiment (one `N`, several trials).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimParams {
    /// Number of nodes `N` (≥ 1).
    pub nodes: u32,
    /// Requested fanout `K` (≥ 1). The effective fanout is
    /// [`SimParams::effective_fanout`] = `min(K, N − 1)`.
    pub fanout: u32,
    pub mode: Mode,
    /// Number of trials; trial `t` uses seed `seed + t` (wrapping).
    pub trials: u32,
    pub seed: u64,
    /// Probability that one exchange is lost, in `[0, 1]`.
    pub loss: f64,
    /// Fraction of the non-origin nodes that accept no inbound exchange, in `[0, 1]`.
    pub unreachable: f64,
    /// Fraction of the non-origin nodes replaced by fresh nodes after each round, in `[0, 1)`.
    pub churn: f64,
    /// Number of distinct announcements, each from its own origin, all made in round 0
    /// (`1 ≤ updates ≤ nodes`).
    pub updates: u32,
    /// Fraction of adversarial nodes, in `[0, 1)`; only models that support it
    /// (not the rumor model) accept a non-zero value.
    pub adversaries: f64,
    /// A trial that has not converged after this many rounds reports `rounds = None`.
    pub max_rounds: u32,
}

impl Default for SimParams {
    /// The founding experiment: N=10, K=2, push-pull, 20 trials, seed 1.
    fn default() -> Self {
        SimParams {
            nodes: 10,
            fanout: 2,
            mode: Mode::PushPull,
            trials: 20,
            seed: 1,
            loss: 0.0,
            unreachable: 0.0,
            churn: 0.0,
            updates: 1,
            adversaries: 0.0,
            max_rounds: DEFAULT_MAX_ROUNDS,
        }
    }
}

/// Why a [`SimParams`] cannot be run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamError {
    #[error("nodes must be at least 1")]
    NoNodes,
    #[error("fanout must be at least 1")]
    NoFanout,
    #[error("trials must be at least 1")]
    NoTrials,
    #[error("{name} must be in [0, 1], got {value}")]
    ProbabilityClosed { name: &'static str, value: f64 },
    #[error("{name} must be in [0, 1), got {value}")]
    ProbabilityHalfOpen { name: &'static str, value: f64 },
    #[error("updates must be between 1 and nodes ({nodes}), got {updates}")]
    Updates { updates: u32, nodes: u32 },
    #[error("{0}")]
    Invalid(String),
    #[error("the {model} model does not support {what}")]
    Unsupported {
        model: &'static str,
        what: &'static str,
    },
}

impl SimParams {
    /// `min(fanout, nodes − 1)`: a node cannot contact more distinct peers than exist.
    pub fn effective_fanout(&self) -> u32 {
        self.fanout.min(self.nodes.saturating_sub(1))
    }

    /// Checks the ranges that hold for every model.
    pub fn validate(&self) -> Result<(), ParamError> {
        if self.nodes == 0 {
            return Err(ParamError::NoNodes);
        }
        if self.fanout == 0 {
            return Err(ParamError::NoFanout);
        }
        if self.trials == 0 {
            return Err(ParamError::NoTrials);
        }
        for (name, value) in [("loss", self.loss), ("unreachable", self.unreachable)] {
            if !(0.0..=1.0).contains(&value) {
                return Err(ParamError::ProbabilityClosed { name, value });
            }
        }
        for (name, value) in [("churn", self.churn), ("adversaries", self.adversaries)] {
            if !(0.0..1.0).contains(&value) {
                return Err(ParamError::ProbabilityHalfOpen { name, value });
            }
        }
        if self.updates == 0 || self.updates > self.nodes {
            return Err(ParamError::Updates {
                updates: self.updates,
                nodes: self.nodes,
            });
        }
        Ok(())
    }

    /// `⌈log₂ N⌉`, 0 for `N = 1`: the founding bound.
    pub fn bound(&self) -> u32 {
        ceil_log2(self.nodes)
    }

    /// The seed of trial `t`.
    pub fn trial_seed(&self, t: u32) -> u64 {
        self.seed.wrapping_add(u64::from(t))
    }
}

/// `⌈log₂ n⌉` computed exactly on integers (0 for `n ≤ 1`).
pub fn ceil_log2(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

/// One model of dissemination. Implementations must be deterministic in `(params, seed)`.
///
/// A new model (e.g. the engine model) is a new module implementing this trait; it can
/// attach per-trial data with [`TrialResult::extra`] and per-report data with
/// [`Model::report_extra`], which lands in [`Report::engine`].
pub trait Model: Sync {
    /// Short name written into reports (`"rumor"`, `"engine"`).
    fn name(&self) -> &'static str;

    /// Model-specific checks, on top of [`SimParams::validate`].
    fn check(&self, params: &SimParams) -> Result<(), ParamError> {
        let _ = params;
        Ok(())
    }

    /// Runs one trial with the given seed.
    fn run_trial(&self, params: &SimParams, seed: u64) -> TrialResult;

    /// Extra data for the whole report (e.g. bytes per node per round).
    fn report_extra(
        &self,
        params: &SimParams,
        trials: &[TrialResult],
    ) -> Option<serde_json::Value> {
        let _ = (params, trials);
        None
    }
}

/// Number of worker threads to use by default: the machine's parallelism.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs all trials of `params` on up to `threads` threads.
///
/// Trial `t` always uses seed `params.seed + t`, and the results come back in trial
/// order, so the outcome does not depend on `threads`. `on_trial_done` is called from
/// the worker threads as each trial finishes (for progress bars).
///
/// Does not validate: call [`SimParams::validate`] and [`Model::check`] first, or use
/// [`run_experiment`].
pub fn run_trials(
    model: &dyn Model,
    params: &SimParams,
    threads: usize,
    on_trial_done: &(dyn Fn(&TrialResult) + Sync),
) -> Vec<TrialResult> {
    let trials = params.trials as usize;
    let threads = threads.clamp(1, trials.max(1));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<TrialResult>>> = Mutex::new(vec![None; trials]);
    let worker = || {
        loop {
            let t = next.fetch_add(1, Ordering::Relaxed);
            if t >= trials {
                break;
            }
            let result = model.run_trial(params, params.trial_seed(t as u32));
            on_trial_done(&result);
            results
                .lock()
                .expect("no worker panics while holding the lock")[t] = Some(result);
        }
    };
    if threads == 1 {
        worker();
    } else {
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(worker);
            }
        });
    }
    results
        .into_inner()
        .expect("workers finished")
        .into_iter()
        .map(|r| r.expect("every trial ran"))
        .collect()
}

/// Validates, runs every trial and builds the [`Report`].
pub fn run_experiment(
    model: &dyn Model,
    params: &SimParams,
    threads: usize,
    on_trial_done: &(dyn Fn(&TrialResult) + Sync),
) -> Result<Report, ParamError> {
    params.validate()?;
    model.check(params)?;
    let trials = run_trials(model, params, threads, on_trial_done);
    let extra = model.report_extra(params, &trials);
    Ok(Report::new(model.name(), params, trials, extra))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceil_log2_matches_the_founding_bound() {
        assert_eq!(ceil_log2(1), 0);
        assert_eq!(ceil_log2(2), 1);
        assert_eq!(ceil_log2(3), 2);
        assert_eq!(ceil_log2(4), 2);
        assert_eq!(ceil_log2(5), 3);
        assert_eq!(ceil_log2(10), 4);
        assert_eq!(ceil_log2(1024), 10);
        assert_eq!(ceil_log2(1025), 11);
        assert_eq!(ceil_log2(1_000_000), 20);
        assert_eq!(ceil_log2(u32::MAX), 32);
    }

    #[test]
    fn validate_rejects_out_of_range_parameters() {
        let ok = SimParams::default();
        assert_eq!(ok.validate(), Ok(()));
        let bad = |f: fn(&mut SimParams)| {
            let mut p = SimParams::default();
            f(&mut p);
            p.validate().is_err()
        };
        assert!(bad(|p| p.nodes = 0));
        assert!(bad(|p| p.fanout = 0));
        assert!(bad(|p| p.trials = 0));
        assert!(bad(|p| p.loss = 1.5));
        assert!(bad(|p| p.loss = -0.1));
        assert!(bad(|p| p.loss = f64::NAN));
        assert!(bad(|p| p.churn = 1.0));
        assert!(bad(|p| p.adversaries = 1.0));
        assert!(bad(|p| p.updates = 0));
        assert!(bad(|p| p.updates = 11));
        assert!(!bad(|p| p.loss = 1.0));
        assert!(!bad(|p| p.unreachable = 1.0));
    }

    #[test]
    fn fanout_is_clamped_to_the_other_nodes() {
        let mut p = SimParams {
            nodes: 3,
            fanout: 5,
            ..SimParams::default()
        };
        assert_eq!(p.effective_fanout(), 2);
        p.nodes = 1;
        assert_eq!(p.effective_fanout(), 0);
    }
}
