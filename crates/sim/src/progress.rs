//! A trial-counting progress bar on stderr (hidden when stderr is not a terminal).

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Counts finished trials. Cheap to share between worker threads (`inc` takes `&self`).
#[derive(Debug, Clone)]
pub struct TrialProgress {
    bar: ProgressBar,
}

impl TrialProgress {
    /// A bar for `total` trials. With `enabled = false`, or when stderr is not a
    /// terminal, nothing is drawn.
    pub fn new(total: u64, enabled: bool) -> Self {
        let bar = if enabled {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} trials {msg} (eta {eta})",
            ) {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        } else {
            ProgressBar::hidden()
        };
        TrialProgress { bar }
    }

    /// Shown after the counts, e.g. `N=1000000`.
    pub fn set_message(&self, msg: impl Into<String>) {
        self.bar.set_message(msg.into());
    }

    /// Prints `msg` to stderr without garbling the bar.
    pub fn log(&self, msg: &str) {
        self.bar.suspend(|| eprintln!("{msg}"));
    }

    /// One more trial done.
    pub fn inc(&self) {
        self.bar.inc(1);
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
