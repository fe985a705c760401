//! Network-adjusted time: how far this node's clock is from its peers', so that a node whose
//! clock is off neither issues records the others see as expired or too far ahead, nor drops
//! live records of others too early or keeps dead ones too long.
//!
//! Every `InSync`/`Differ` answer carries the answering peer's (network-adjusted) time. The
//! side that started the exchange takes one sample per answer, NTP-style:
//! `offset = peer_time − (sent_at + received_at) / 2`, and keeps the latest sample of each of
//! the last [`ClockConfig::max_samples`] peers. The correction is the **median** of samples
//! younger than [`ClockConfig::max_sample_age_ms`] (answers slower than
//! [`ClockConfig::max_round_trip_ms`] are not sampled), applied only once at least
//! [`ClockConfig::min_peers`] peers were sampled, and clamped to
//! ±[`ClockConfig::max_correction_ms`] (Bitcoin's "network-adjusted time" works the same way).
//!
//! Only peers this node chose to contact are sampled (uniformly from the directory), never a
//! peer that contacts it: a flood of inbound exchanges cannot move the clock. Peers that hold a
//! majority of the samples can still shift it, by at most the clamp.

use std::collections::VecDeque;

use directory::PeerId;

/// Clock-correction settings.
#[derive(Debug, Clone)]
pub struct ClockConfig {
    /// Fewest distinct peers sampled before any correction is applied.
    pub min_peers: usize,
    /// Peers whose latest sample is kept (the oldest sample is forgotten first).
    pub max_samples: usize,
    /// Samples older than this are not used.
    pub max_sample_age_ms: u64,
    /// The correction never exceeds this, either way.
    pub max_correction_ms: u64,
    /// Answers that took longer than this (request to answer) are not sampled: a sample is
    /// off by up to half its round trip (a request queued at a busy peer, then a quick
    /// answer), and a node re-issues its records when the correction moves by a second.
    pub max_round_trip_ms: u64,
}

impl Default for ClockConfig {
    fn default() -> Self {
        Self {
            min_peers: 5,
            max_samples: 64,
            max_sample_age_ms: 10 * 60_000,
            max_correction_ms: 2 * 60_000,
            max_round_trip_ms: 1_000,
        }
    }
}

#[derive(Debug, Clone)]
struct Sample {
    peer: PeerId,
    offset_ms: i64,
    /// Local time the sample was taken.
    at: u64,
}

/// Peer clock samples and the correction they give.
#[derive(Debug, Clone)]
pub struct NetworkClock {
    config: ClockConfig,
    /// Latest sample per peer, oldest first.
    samples: VecDeque<Sample>,
    offset_ms: i64,
}

impl NetworkClock {
    pub fn new(config: ClockConfig) -> Self {
        Self {
            config,
            samples: VecDeque::new(),
            offset_ms: 0,
        }
    }

    /// The current correction (ms to add to the local clock).
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms
    }

    /// Distinct peers with a sample.
    pub fn peers_sampled(&self) -> usize {
        self.samples.len()
    }

    /// Local time `now` corrected by the network offset.
    pub fn network_time(&self, now: u64) -> u64 {
        now.saturating_add_signed(self.offset_ms)
    }

    /// Records one answer from `peer`: it said `peer_time` while the request left at
    /// `sent_at` and the answer came at `received_at` (local unix ms).
    pub fn observe(&mut self, peer: PeerId, peer_time: u64, sent_at: u64, received_at: u64) {
        if received_at < sent_at
            || received_at - sent_at > self.config.max_round_trip_ms
            || self.config.max_samples == 0
        {
            return;
        }
        let midpoint = sent_at / 2 + received_at / 2 + (sent_at % 2 + received_at % 2) / 2;
        let offset_ms = (i128::from(peer_time) - i128::from(midpoint))
            .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
        self.samples.retain(|s| s.peer != peer);
        while self.samples.len() >= self.config.max_samples {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            peer,
            offset_ms,
            at: received_at,
        });
        self.recompute(received_at);
    }

    /// Forgets samples that are too old and recomputes the correction.
    pub fn refresh(&mut self, now: u64) {
        self.recompute(now);
    }

    fn recompute(&mut self, now: u64) {
        let max_age = self.config.max_sample_age_ms;
        while self
            .samples
            .front()
            .is_some_and(|s| now.saturating_sub(s.at) > max_age)
        {
            self.samples.pop_front();
        }
        if self.samples.len() < self.config.min_peers.max(1) {
            self.offset_ms = 0;
            return;
        }
        let mut offsets: Vec<i64> = self.samples.iter().map(|s| s.offset_ms).collect();
        offsets.sort_unstable();
        let n = offsets.len();
        let median = if n % 2 == 1 {
            offsets[n / 2]
        } else {
            // Mean of the two middle samples, without overflow.
            let (a, b) = (offsets[n / 2 - 1], offsets[n / 2]);
            a / 2 + b / 2 + (a % 2 + b % 2) / 2
        };
        let cap = i64::try_from(self.config.max_correction_ms).unwrap_or(i64::MAX);
        // The correction is relative to the clock the samples were taken with: samples are
        // offsets of the peers from our *local* clock, so the median is the correction itself.
        self.offset_ms = median.clamp(-cap, cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(i: u64) -> PeerId {
        directory::sample::keypair(i).public().to_peer_id()
    }

    #[test]
    fn slow_answers_are_not_sampled() {
        // In one overloaded process every node shares one clock, but a request that waits
        // 2.5 s at a busy peer before a quick answer looks like a +1.2 s offset.
        let mut c = NetworkClock::new(ClockConfig::default());
        for i in 0..8 {
            c.observe(peer(i), 12_500, 10_000, 12_600);
        }
        assert_eq!(c.peers_sampled(), 0);
        assert_eq!(c.offset_ms(), 0);
        for i in 0..8 {
            c.observe(peer(i), 10_400, 10_000, 10_800);
        }
        assert_eq!(c.peers_sampled(), 8);
        assert_eq!(c.offset_ms(), 0);
    }

    #[test]
    fn no_correction_before_enough_peers() {
        let mut c = NetworkClock::new(ClockConfig::default());
        for i in 1..5 {
            c.observe(peer(i), 61_000, 1_000, 1_000);
            assert_eq!(c.offset_ms(), 0);
        }
        c.observe(peer(5), 61_000, 1_000, 1_000);
        assert_eq!(c.offset_ms(), 60_000);
        assert_eq!(c.network_time(1_000), 61_000);
    }

    #[test]
    fn the_median_ignores_a_minority_of_liars_and_the_clamp_bounds_a_majority() {
        let mut c = NetworkClock::new(ClockConfig::default());
        for i in 0..5 {
            c.observe(peer(i), 10_000 + 20, 10_000, 10_040);
        }
        for i in 5..8 {
            c.observe(peer(i), u64::MAX / 2, 10_000, 10_040);
        }
        assert_eq!(c.offset_ms(), 0, "5 honest peers against 3 liars");
        for i in 8..12 {
            c.observe(peer(i), u64::MAX / 2, 10_000, 10_040);
        }
        assert_eq!(
            c.offset_ms(),
            120_000,
            "a majority of liars moves it by the clamp only"
        );
    }

    #[test]
    fn one_sample_per_peer_and_old_samples_expire() {
        let mut c = NetworkClock::new(ClockConfig::default());
        for _ in 0..5 {
            c.observe(peer(1), 5_000, 0, 0);
        }
        assert_eq!(c.peers_sampled(), 1);
        for i in 2..=5 {
            c.observe(peer(i), 5_000, 0, 0);
        }
        assert_eq!(c.offset_ms(), 5_000);
        c.refresh(11 * 60_000);
        assert_eq!(c.peers_sampled(), 0);
        assert_eq!(c.offset_ms(), 0);
    }

    #[test]
    fn a_node_behind_its_peers_is_corrected_forward_and_bounded_memory() {
        let mut c = NetworkClock::new(ClockConfig {
            max_samples: 8,
            ..ClockConfig::default()
        });
        for i in 0..100 {
            // Peers are 60 s ahead of us; 30 ms round trip.
            c.observe(peer(i), 1_000_000 + 60_015, 1_000_000, 1_000_030);
        }
        assert_eq!(c.peers_sampled(), 8);
        assert_eq!(c.offset_ms(), 60_000);
        // Bogus timing (answer before request) is ignored.
        c.observe(peer(500), 0, 10, 5);
        assert_eq!(c.offset_ms(), 60_000);
    }
}
