//! One reconciliation exchange through the real engine and codec, N records per side,
//! D differing, snapshots already built (they are rebuilt once per store change).

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use gossipdir_gossip::pair::{differing, exchange};

const NOW: u64 = 1_800_000_000_000;

fn reconcile(c: &mut Criterion) {
    let mut group = c.benchmark_group("reconcile");
    group.sample_size(10);
    for n in [1_000u64, 10_000, 100_000] {
        for d in [0u64, 1, 10, 100, 1000] {
            let (mut a, mut b) = differing(n, d, NOW);
            a.summary();
            b.summary();
            group.bench_with_input(BenchmarkId::new(format!("n{n}"), d), &d, |bench, _| {
                bench.iter_batched(
                    || (a.clone(), b.clone()),
                    // The engines are returned so that dropping them is not timed.
                    |(mut a, mut b)| {
                        let transfer = exchange(&mut a, &mut b, NOW).expect("codec");
                        (transfer, a, b)
                    },
                    BatchSize::LargeInput,
                )
            });
        }
    }
    group.finish();
}

criterion_group!(benches, reconcile);
criterion_main!(benches);
