//! The rumor model: the textbook random phone-call model, synchronous rounds.
//!
//! # Definition
//!
//! Nodes are the slots `0..N`. The origins are slots `0..U` (`U = updates`); origin `o`
//! announces record `o` in round 0. Since peers are chosen uniformly, which slots are
//! origins does not matter. Every round:
//!
//! 1. **Exchanges.** Every node `i`, in slot order, picks `K = min(fanout, N − 1)`
//!    distinct peers uniformly among the other nodes (rejection sampling), and for each
//!    picked peer `j`, in pick order:
//!    * if `loss > 0`, the exchange is lost with probability `loss` (one coin per
//!      exchange);
//!    * if `j` is unreachable, the exchange fails (unreachable nodes still call out);
//!    * otherwise, reading the state **at the start of the round** and writing to the
//!      state at the end of the round: `push` gives `j` what `i` held, `pull` gives
//!      `i` what `j` held, `push-pull` does both.
//! 2. **Convergence check.** The round converged when every node present holds every
//!    record. A trial's result is the first such round (0 if that already holds at
//!    the start, i.e. `N = 1`), or `None` if there is none within `max_rounds`.
//! 3. **Churn** (only when not converged). `round(churn × (N − U))` distinct non-origin
//!    slots are picked uniformly; each one's node leaves and is replaced by a fresh
//!    node that holds nothing. A replacement inherits the slot's reachability, so the
//!    unreachable fraction stays constant. Origins never leave: a publisher stays until
//!    its record is everywhere, so churn can slow a run down but never makes it
//!    impossible. A fresh node calls and is called from the next round on.
//!
//! The unreachable nodes are `round(unreachable × (N − U))` non-origin slots picked
//! uniformly once per trial; origins are always reachable (and can always dial).
//!
//! # Random numbers and fair comparisons
//!
//! Each trial draws from its own `ChaCha8Rng::seed_from_u64(seed)`. The stream is
//! consumed in an order that depends only on the parameters `N, K, U, loss,
//! unreachable, churn` — never on the mode or on who is informed: first the unreachable
//! set (if `unreachable > 0`), then per round the peer picks and loss coins of every
//! node in slot order, then the churn picks. Hence, for one seed, `push`, `pull` and
//! `push-pull` see exactly the same contacts, losses and replacements, and since a
//! push-pull exchange informs whoever the push or the pull exchange informs, by
//! induction a push-pull node holds a superset of what it would hold under push or
//! pull, at every round: push-pull never converges later than push or pull on the same
//! seed.

use rand::distributions::{Bernoulli, Distribution, Uniform};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Mode, Model, ParamError, SimParams, TrialResult};

/// The rumor model (see the [module documentation](self)).
#[derive(Debug, Clone, Copy, Default)]
pub struct RumorModel;

impl Model for RumorModel {
    fn name(&self) -> &'static str {
        "rumor"
    }

    fn check(&self, params: &SimParams) -> Result<(), ParamError> {
        if params.adversaries > 0.0 {
            return Err(ParamError::Unsupported {
                model: "rumor",
                what: "adversaries (use the engine model)",
            });
        }
        Ok(())
    }

    fn run_trial(&self, params: &SimParams, seed: u64) -> TrialResult {
        TrialResult {
            seed,
            rounds: simulate(params, seed),
            extra: None,
        }
    }
}

/// Runs one rumor-model trial; returns the convergence round, `None` if not converged
/// within `params.max_rounds`. `params` must be valid ([`SimParams::validate`]).
pub fn simulate(params: &SimParams, seed: u64) -> Option<u32> {
    let (n, u) = (params.nodes as usize, params.updates);
    if u <= 4 {
        run(params, seed, Packed::new(n, u))
    } else if u <= 8 {
        run(params, seed, State::<u8>::new(n, u))
    } else {
        run(params, seed, State::<u64>::new(n, u))
    }
}

/// One word of a node's bitset of held records.
trait Word: Copy + Eq + std::ops::BitOr<Output = Self> + Send + Sync + 'static {
    const BITS: u32;
    const ZERO: Self;
    /// The lowest `bits` bits set (`1 ≤ bits ≤ BITS`).
    fn low_mask(bits: u32) -> Self;
    fn bit(b: u32) -> Self;
}

impl Word for u8 {
    const BITS: u32 = 8;
    const ZERO: Self = 0;
    fn low_mask(bits: u32) -> Self {
        (u16::MAX >> (16 - bits)) as u8
    }
    fn bit(b: u32) -> Self {
        1 << b
    }
}

impl Word for u64 {
    const BITS: u32 = 64;
    const ZERO: Self = 0;
    fn low_mask(bits: u32) -> Self {
        u64::MAX >> (64 - bits)
    }
    fn bit(b: u32) -> Self {
        1 << b
    }
}

/// What the round loop needs from the nodes' held-record state.
trait Store {
    /// `next[to] |= cur[from]`.
    fn give(&mut self, from: usize, to: usize);
    /// Ends the round: makes `next` current and counts the nodes holding every record.
    fn commit(&mut self) -> usize;
    /// Number of nodes whose current state holds every record.
    fn count_complete(&self) -> usize;
    /// A fresh node in `slot`: holds nothing.
    fn reset(&mut self, slot: usize);
}

/// Up to 4 records, one byte per node: `cur` in the low nibble, `next` in the high
/// one. For one record and N = 10⁶ the whole state is 1 MB, which stays in cache.
struct Packed {
    bytes: Vec<u8>,
    full: u8,
}

impl Packed {
    fn new(nodes: usize, updates: u32) -> Self {
        debug_assert!((1..=4).contains(&updates));
        let mut bytes = vec![0u8; nodes];
        for (r, b) in bytes.iter_mut().take(updates as usize).enumerate() {
            *b = 0x11 << r;
        }
        Packed {
            bytes,
            full: (1u8 << updates) - 1,
        }
    }
}

impl Store for Packed {
    #[inline(always)]
    fn give(&mut self, from: usize, to: usize) {
        let cur = self.bytes[from] & 0x0f;
        self.bytes[to] |= cur << 4;
    }

    fn commit(&mut self) -> usize {
        let full = self.full;
        let mut complete = 0;
        for b in &mut self.bytes {
            let next = *b >> 4;
            *b = (next << 4) | next;
            complete += usize::from(next == full);
        }
        complete
    }

    fn count_complete(&self) -> usize {
        self.bytes
            .iter()
            .filter(|&&b| b & 0x0f == self.full)
            .count()
    }

    fn reset(&mut self, slot: usize) {
        self.bytes[slot] = 0;
    }
}

/// Nodes' held-record bitsets, flat: node `i` owns `2 × stride` consecutive words, its
/// state at the start of the round (`cur`) then its state at the end (`next`). Keeping
/// both next to each other halves the cache misses of an exchange.
struct State<W: Word> {
    stride: usize,
    words: Vec<W>,
    full: Vec<W>,
}

impl<W: Word> State<W> {
    fn new(nodes: usize, updates: u32) -> Self {
        let stride = (updates as usize).div_ceil(W::BITS as usize);
        let mut words = vec![W::ZERO; nodes * 2 * stride];
        for r in 0..updates {
            // Origin of record r is slot r; set the bit in both cur and next.
            let (w, b) = ((r / W::BITS) as usize, r % W::BITS);
            let base = r as usize * 2 * stride;
            words[base + w] = words[base + w] | W::bit(b);
            words[base + stride + w] = words[base + stride + w] | W::bit(b);
        }
        let full = (0..stride)
            .map(|w| W::low_mask((updates - w as u32 * W::BITS).min(W::BITS)))
            .collect();
        State {
            stride,
            words,
            full,
        }
    }
}

impl<W: Word> Store for State<W> {
    /// `next[to] |= cur[from]`.
    #[inline(always)]
    fn give(&mut self, from: usize, to: usize) {
        let s = self.stride;
        if s == 1 {
            self.words[2 * to + 1] = self.words[2 * to + 1] | self.words[2 * from];
        } else {
            for w in 0..s {
                let x = self.words[2 * s * from + w];
                let d = &mut self.words[2 * s * to + s + w];
                *d = *d | x;
            }
        }
    }

    /// Ends the round: makes `next` current and counts the nodes holding every record.
    fn commit(&mut self) -> usize {
        let s = self.stride;
        let mut complete = 0;
        if s == 1 {
            let full = self.full[0];
            for node in self.words.chunks_exact_mut(2) {
                node[0] = node[1];
                complete += usize::from(node[0] == full);
            }
            return complete;
        }
        for node in self.words.chunks_exact_mut(2 * s) {
            let (cur, next) = node.split_at_mut(s);
            cur.copy_from_slice(next);
            complete += usize::from(cur == self.full.as_slice());
        }
        complete
    }

    fn count_complete(&self) -> usize {
        let s = self.stride;
        self.words
            .chunks_exact(2 * s)
            .filter(|node| &node[..s] == self.full.as_slice())
            .count()
    }

    /// A fresh node in `slot`: holds nothing.
    fn reset(&mut self, slot: usize) {
        let s = self.stride;
        self.words[2 * s * slot..2 * s * (slot + 1)].fill(W::ZERO);
    }
}

fn run(params: &SimParams, seed: u64, mut state: impl Store) -> Option<u32> {
    let n = params.nodes as usize;
    let origins = params.updates as usize;
    let k = params.effective_fanout() as usize;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    if state.count_complete() == n {
        return Some(0);
    }

    let others = n - origins;
    let unreachable = (params.unreachable > 0.0).then(|| {
        let count = ((params.unreachable * others as f64).round() as usize).min(others);
        pick_unreachable(&mut rng, n, origins, count)
    });
    let loss = (params.loss > 0.0)
        .then(|| Bernoulli::new(params.loss).expect("loss validated to be in [0, 1]"));
    let churn_count = ((params.churn * others as f64).round() as usize).min(others);
    // Round in which a slot was last replaced, to pick distinct slots.
    let mut replaced_in: Vec<u32> = if churn_count > 0 {
        vec![0; n]
    } else {
        Vec::new()
    };

    let peer_dist = Uniform::new(0u32, n as u32 - 1);
    let mut peers: Vec<usize> = Vec::with_capacity(k);
    for round in 1..=params.max_rounds {
        for i in 0..n {
            peers.clear();
            while peers.len() < k {
                // Uniform over the other nodes: skip over `i`.
                let mut j = peer_dist.sample(&mut rng) as usize;
                if j >= i {
                    j += 1;
                }
                if !peers.contains(&j) {
                    peers.push(j);
                }
            }
            for &j in &peers {
                if let Some(loss) = &loss
                    && loss.sample(&mut rng)
                {
                    continue;
                }
                if let Some(unreachable) = &unreachable
                    && unreachable[j]
                {
                    continue;
                }
                match params.mode {
                    Mode::Push => state.give(i, j),
                    Mode::Pull => state.give(j, i),
                    Mode::PushPull => {
                        state.give(i, j);
                        state.give(j, i);
                    }
                }
            }
        }
        if state.commit() == n {
            return Some(round);
        }
        if churn_count > 0 {
            let mut left = 0;
            while left < churn_count {
                let slot = rng.gen_range(origins..n);
                if replaced_in[slot] != round {
                    replaced_in[slot] = round;
                    state.reset(slot);
                    left += 1;
                }
            }
        }
    }
    None
}

/// Marks `count` distinct non-origin slots (partial Fisher–Yates over `origins..n`).
fn pick_unreachable(rng: &mut ChaCha8Rng, n: usize, origins: usize, count: usize) -> Vec<bool> {
    let mut flags = vec![false; n];
    let mut candidates: Vec<u32> = (origins as u32..n as u32).collect();
    for t in 0..count {
        let r = rng.gen_range(t..candidates.len());
        candidates.swap(t, r);
        flags[candidates[t] as usize] = true;
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_and_word_bitsets_give_the_same_runs() {
        for updates in [1, 3, 4, 5, 8] {
            for mode in [Mode::Push, Mode::Pull, Mode::PushPull] {
                let p = SimParams {
                    nodes: 300,
                    updates,
                    mode,
                    loss: 0.1,
                    unreachable: 0.1,
                    churn: 0.01,
                    ..SimParams::default()
                };
                for seed in 0..5 {
                    let packed = (updates <= 4).then(|| run(&p, seed, Packed::new(300, updates)));
                    let bytes = run(&p, seed, State::<u8>::new(300, updates));
                    let words = run(&p, seed, State::<u64>::new(300, updates));
                    assert_eq!(bytes, words, "{p:?}");
                    if let Some(packed) = packed {
                        assert_eq!(packed, bytes, "{p:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn full_masks_cover_exactly_the_updates() {
        let s = State::<u64>::new(70, 70);
        assert_eq!(s.full, vec![u64::MAX, (1 << 6) - 1]);
        let s = State::<u8>::new(8, 8);
        assert_eq!(s.full, vec![0xff]);
        assert_eq!(s.count_complete(), 0);
        let s = State::<u8>::new(1, 1);
        assert_eq!(s.count_complete(), 1);
    }
}
