//! The outcome of one experiment, its criteria and its human tables.

use serde::{Deserialize, Serialize};

use crate::{EXPERIMENT, Mode, SimParams, catastrophic_rounds};

/// One trial: its seed and its convergence round (`None`: not converged within
/// `max_rounds`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialResult {
    pub seed: u64,
    pub rounds: Option<u32>,
    /// Model-specific data for this trial (the rumor model has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<serde_json::Value>,
}

/// The founding criteria.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Criteria {
    /// Every trial converged and the worst one within `⌈log₂N⌉` rounds.
    pub strict: bool,
    /// Every trial converged and the average within `⌈log₂N⌉ + 2` rounds.
    pub lenient: bool,
    /// Some trial did not converge within [`catastrophic_rounds`]: the founding 10 rounds,
    /// or twice the bound when that is larger (N > 32).
    pub catastrophic: bool,
}

/// Asymptotic round counts of the random phone-call model with fanout 1, for
/// comparison (they are not bounds for other fanouts).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Theory {
    /// Push (Frieze–Grimmett, Pittel): `log₂N + ln N`.
    pub push: f64,
    /// Push-pull (Karp et al.): `log₃N`.
    pub push_pull: f64,
}

impl Theory {
    pub fn for_nodes(nodes: u32) -> Theory {
        let n = f64::from(nodes.max(1));
        Theory {
            push: n.log2() + n.ln(),
            push_pull: n.ln() / 3f64.ln(),
        }
    }
}

/// The outcome of one experiment (one `N`, all its trials).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Always `"bet15"`.
    pub experiment: String,
    /// `"rumor"`, `"engine"`, …
    pub model: String,
    pub nodes: u32,
    /// The effective fanout `min(K, N − 1)`.
    pub fanout: u32,
    pub mode: Mode,
    /// `⌈log₂N⌉` (0 for `N = 1`).
    pub bound: u32,
    pub seed: u64,
    pub loss: f64,
    pub unreachable: f64,
    pub churn: f64,
    pub updates: u32,
    pub adversaries: f64,
    pub max_rounds: u32,
    pub trials: Vec<TrialResult>,
    /// Number of trials that converged within `max_rounds`.
    pub converged: u32,
    /// Worst, average and best over the converged trials; `None` if none converged.
    pub worst: Option<u32>,
    pub average: Option<f64>,
    pub best: Option<u32>,
    pub criteria: Criteria,
    pub theory: Theory,
    /// Model-specific data (e.g. the engine model's bytes per node per round).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<serde_json::Value>,
}

impl Report {
    /// Builds the report of `trials`, computing the statistics and the criteria.
    pub fn new(
        model: &str,
        params: &SimParams,
        trials: Vec<TrialResult>,
        engine: Option<serde_json::Value>,
    ) -> Report {
        let rounds: Vec<u32> = trials.iter().filter_map(|t| t.rounds).collect();
        let all_converged = rounds.len() == trials.len();
        let worst = rounds.iter().copied().max();
        let best = rounds.iter().copied().min();
        let average = (!rounds.is_empty())
            .then(|| rounds.iter().map(|&r| f64::from(r)).sum::<f64>() / rounds.len() as f64);
        let bound = params.bound();
        let criteria = Criteria {
            strict: all_converged && worst.is_some_and(|w| w <= bound),
            lenient: all_converged && average.is_some_and(|a| a <= f64::from(bound + 2)),
            catastrophic: trials.iter().any(|t| {
                t.rounds
                    .is_none_or(|r| r > catastrophic_rounds(params.nodes))
            }),
        };
        Report {
            experiment: EXPERIMENT.to_string(),
            model: model.to_string(),
            nodes: params.nodes,
            fanout: params.effective_fanout(),
            mode: params.mode,
            bound,
            seed: params.seed,
            loss: params.loss,
            unreachable: params.unreachable,
            churn: params.churn,
            updates: params.updates,
            adversaries: params.adversaries,
            max_rounds: params.max_rounds,
            converged: rounds.len() as u32,
            trials,
            worst,
            average,
            best,
            criteria,
            theory: Theory::for_nodes(params.nodes),
            engine,
        }
    }

    /// The non-default conditions, e.g. `", loss 0.1, churn 0.05"` (empty if none).
    fn conditions(&self) -> String {
        let mut s = String::new();
        for (name, v) in [
            ("loss", self.loss),
            ("unreachable", self.unreachable),
            ("churn", self.churn),
            ("adversaries", self.adversaries),
        ] {
            if v > 0.0 {
                s.push_str(&format!(", {name} {v}"));
            }
        }
        if self.updates != 1 {
            s.push_str(&format!(", {} updates", self.updates));
        }
        s
    }

    /// The founding table, as printed by `gossipdir simulate`.
    pub fn to_table(&self) -> String {
        let na = || format!("none converged (max {})", self.max_rounds);
        let mut rows: Vec<(String, String)> = vec![
            (
                "Worst-case convergence".into(),
                self.worst.map_or_else(na, rounds),
            ),
            (
                "Average convergence".into(),
                self.average.map_or_else(na, |a| format!("{a:.2} rounds")),
            ),
            (
                "Best-case convergence".into(),
                self.best.map_or_else(na, rounds),
            ),
            ("Theoretical bound".into(), rounds(self.bound)),
        ];
        if self.converged as usize != self.trials.len() {
            rows.push((
                "Converged trials".into(),
                format!(
                    "{}/{} within {} rounds",
                    self.converged,
                    self.trials.len(),
                    self.max_rounds
                ),
            ));
        }
        // Model rows: the engine model's `table` (pairs of strings), if any.
        if let Some(table) = self
            .engine
            .as_ref()
            .and_then(|e| e.get("table"))
            .and_then(|t| t.as_array())
        {
            for row in table {
                if let Some([m, v]) = row.as_array().map(Vec::as_slice)
                    && let (Some(m), Some(v)) = (m.as_str(), v.as_str())
                {
                    rows.push((m.to_string(), v.to_string()));
                }
            }
        }
        let metric_w = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
        let value_w = rows
            .iter()
            .map(|r| r.1.chars().count())
            .max()
            .unwrap_or(0)
            .max("Value".len());
        let mut out = format!(
            "Bet 15 — gossip directory, N={}, K={}, {}, {} model, {} trials{}\n",
            self.nodes,
            self.fanout,
            self.mode,
            self.model,
            self.trials.len(),
            self.conditions()
        );
        out.push_str(&format!(
            "| {:<metric_w$} | {:<value_w$} |\n",
            "Metric", "Value"
        ));
        out.push_str(&format!(
            "|{}|{}|\n",
            "-".repeat(metric_w + 2),
            "-".repeat(value_w + 2)
        ));
        for (m, v) in &rows {
            out.push_str(&format!("| {m:<metric_w$} | {v:<value_w$} |\n"));
        }
        out.push_str(&self.criteria_line());
        out.push('\n');
        out
    }

    /// `STRICT: PASS  LENIENT: PASS  CATASTROPHIC: no`
    pub fn criteria_line(&self) -> String {
        let pf = |b: bool| if b { "PASS" } else { "FAIL" };
        format!(
            "STRICT: {}  LENIENT: {}  CATASTROPHIC: {}",
            pf(self.criteria.strict),
            pf(self.criteria.lenient),
            if self.criteria.catastrophic {
                "YES"
            } else {
                "no"
            }
        )
    }
}

fn rounds(r: u32) -> String {
    if r == 1 {
        "1 round".to_string()
    } else {
        format!("{r} rounds")
    }
}

/// A compact table with one row per report (for `--sweep`).
pub fn sweep_table(reports: &[Report]) -> String {
    let mut out = String::new();
    if let Some(first) = reports.first() {
        out.push_str(&format!(
            "Bet 15 sweep — {}, {} model, {} trials{} (theory columns: K=1 asymptotics)\n",
            first.mode,
            first.model,
            first.trials.len(),
            first.conditions()
        ));
    }
    let header = [
        "N",
        "K",
        "worst",
        "avg",
        "best",
        "⌈log₂N⌉",
        "log₂N+lnN",
        "log₃N",
        "conv",
        "STRICT",
        "LENIENT",
        "CATASTR.",
    ];
    let opt = |v: Option<u32>| v.map_or("-".to_string(), |v| v.to_string());
    let rows: Vec<[String; 12]> = reports
        .iter()
        .map(|r| {
            let pf = |b: bool| if b { "PASS" } else { "FAIL" }.to_string();
            [
                r.nodes.to_string(),
                r.fanout.to_string(),
                opt(r.worst),
                r.average.map_or("-".to_string(), |a| format!("{a:.2}")),
                opt(r.best),
                r.bound.to_string(),
                format!("{:.2}", r.theory.push),
                format!("{:.2}", r.theory.push_pull),
                format!("{}/{}", r.converged, r.trials.len()),
                pf(r.criteria.strict),
                pf(r.criteria.lenient),
                if r.criteria.catastrophic { "YES" } else { "no" }.to_string(),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = String>| {
        let mut s = String::from("|");
        for (cell, &w) in cells.zip(&widths) {
            let pad = w - cell.chars().count();
            s.push_str(&format!(" {}{} |", " ".repeat(pad), cell));
        }
        s.push('\n');
        s
    };
    out.push_str(&line(&mut header.iter().map(|h| h.to_string())));
    out.push('|');
    for &w in &widths {
        out.push_str(&"-".repeat(w + 2));
        out.push('|');
    }
    out.push('\n');
    for row in rows {
        out.push_str(&line(&mut row.into_iter()));
    }
    out
}
