//! Record verify + merge throughput: signed records from the wire into an empty store.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use gossipdir_directory::sample::population;
use gossipdir_directory::{Limits, RawRecord, Record, Store};

const NOW: u64 = 1_800_000_000_000;

fn verify_merge(c: &mut Criterion) {
    let raw: Vec<RawRecord> = population(0, 10_000, NOW - 1000)
        .iter()
        .map(Record::to_raw)
        .collect();
    let limits = Limits::default();
    let mut group = c.benchmark_group("directory");
    group.throughput(Throughput::Elements(raw.len() as u64));
    group.sample_size(10);
    group.bench_function("decode_verify_merge_10k", |b| {
        b.iter_batched(
            || (raw.clone(), Store::new(limits.clone())),
            |(raw, mut store)| {
                for r in raw {
                    let record = Record::from_raw(r, &limits).expect("valid");
                    store.merge(record, NOW).expect("accepted");
                }
                store
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("decode_batch_verify_merge_10k", |b| {
        b.iter_batched(
            || (raw.clone(), Store::new(limits.clone())),
            |(raw, mut store)| {
                let records: Vec<Record> = raw
                    .into_iter()
                    .map(|r| Record::from_raw(r, &limits).expect("valid"))
                    .collect();
                let results = store.merge_batch(records, NOW);
                assert!(results.iter().all(|r| r.is_ok()));
                store
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, verify_merge);
criterion_main!(benches);
