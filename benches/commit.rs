//! The commit's two costs. `encode_batch`: the client's side, encoding a batch's insert
//! parameters (no database), on both workloads' mixes (4% bad input, 1% duplicates).
//! `commit_batch`: into a real PostgreSQL, by batch size: fresh rows, and batches that
//! are all duplicates (redeliveries). Uses the database `ep_bench` on DATABASE_URL's
//! server (default: the local one), recreated at start.

use std::time::Duration;

use chrono::Utc;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use event_processor::producers::generator::{Generator, Mix};
use event_processor::producers::templates::EventsFile;
use event_processor::registry::{Registry, RegistryFile};
use event_processor::store::{encode_parameters, Store};
use event_processor::store::{Arrival, Classified};
use event_processor::validation::classify;

fn server_url() -> String {
    let url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/event_processor".into());
    url[..url.rfind('/').unwrap()].to_owned()
}

fn batch(generator: &mut Generator, registry: &Registry, n: usize) -> Vec<Classified> {
    (0..n)
        .map(|_| {
            let body = generator.valid().body;
            let message_id = uuid::Uuid::new_v4().to_string();
            let verdict = classify(&body, &message_id, registry);
            let arrival =
                Arrival { message_id, body, receive_count: 1, sent_at: Some(Utc::now()), received_at: Utc::now() };
            Classified { arrival, verdict }
        })
        .collect()
}

/// A batch of the benchmark's mix: mostly valid events, some bad input, some duplicates.
fn mixed_batch(generator: &mut Generator, registry: &Registry, n: usize) -> Vec<Classified> {
    (0..n)
        .map(|i| {
            let body = generator.next_event().body;
            let message_id = format!("sqs-{i}");
            let verdict = classify(&body, &message_id, registry);
            let arrival =
                Arrival { message_id, body, receive_count: 1, sent_at: Some(Utc::now()), received_at: Utc::now() };
            Classified { arrival, verdict }
        })
        .collect()
}

fn encode(c: &mut Criterion) {
    let mix = Mix { invalid_ratio: 0.04, duplicate_ratio: 0.01 };
    let bench = std::path::Path::new("deployments/bench");
    let workloads = [
        ("demo", RegistryFile::demo(), EventsFile::demo()),
        (
            "formats",
            RegistryFile::read(&bench.join("formats-registry.json")).unwrap(),
            EventsFile::read(&bench.join("formats-events.json")).unwrap(),
        ),
    ];
    let mut group = c.benchmark_group("encode_batch");
    for (name, registry, events) in workloads {
        let registry = Registry::from_file(&registry).unwrap();
        let batch = mixed_batch(&mut Generator::new(events, mix, None, Some(7)), &registry, 100);
        let mut out = bytes::BytesMut::with_capacity(1 << 20);
        group.throughput(Throughput::Elements(batch.len() as u64));
        group.bench_function(BenchmarkId::new(name, batch.len()), |b| {
            b.iter(|| {
                out.clear();
                encode_parameters(&batch, &mut out)
            })
        });
    }
    group.finish();
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(async {
        let (admin, conn) = tokio_postgres::connect(&format!("{}/postgres", server_url()), tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL answers (start it with deployments/local/start.sh)");
        tokio::spawn(conn);
        admin.batch_execute("DROP DATABASE IF EXISTS ep_bench WITH (FORCE)").await.unwrap();
        admin.batch_execute("CREATE DATABASE ep_bench").await.unwrap();
        let store = Store::connect(&format!("{}/ep_bench", server_url()), 4).unwrap();
        store.migrate().await.unwrap();
        RegistryFile::demo().apply(&mut store.pool().get().await.unwrap(), false).await.unwrap();
        store
    });
    let registry = Registry::from_file(&RegistryFile::demo()).unwrap();
    let mut generator = Generator::new(EventsFile::demo(), Mix::default(), None, Some(1));

    let mut group = c.benchmark_group("commit_batch");
    group.measurement_time(Duration::from_secs(5));
    for size in [10usize, 50, 100, 500] {
        group.throughput(Throughput::Elements(size as u64));
        group.bench_function(BenchmarkId::new("fresh", size), |b| {
            b.iter_batched(
                || batch(&mut generator, &registry, size),
                |mut rows| rt.block_on(store.commit_batch(&mut rows)).unwrap(),
                BatchSize::SmallInput,
            )
        });
        let mut duplicates = batch(&mut generator, &registry, size);
        rt.block_on(store.commit_batch(&mut duplicates)).unwrap();
        group.bench_function(BenchmarkId::new("duplicates", size), |b| {
            b.iter(|| {
                let outcome = rt.block_on(store.commit_batch(&mut duplicates)).unwrap();
                assert_eq!(outcome.duplicates, size as u64);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, encode, bench);
criterion_main!(benches);
