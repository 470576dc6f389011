//! Envelope parsing + validation per message: valid events of each type (payloads of
//! 300-600 bytes from the demo templates) and each rejection kind.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use event_processor::producers::generator::{Generator, Invalid, Mix};
use event_processor::producers::templates::EventsFile;
use event_processor::registry::{Registry, RegistryFile};
use event_processor::validation::classify;

fn bench(c: &mut Criterion) {
    let registry = Registry::from_file(&RegistryFile::demo()).unwrap();
    let mut generator = Generator::new(EventsFile::demo(), Mix::default(), None, Some(42));
    let mut group = c.benchmark_group("classify");

    // Valid events, one group per event type, 64 distinct bodies each.
    let mut valid: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    while valid.values().map(Vec::len).sum::<usize>() < 3 * 64 {
        let o = generator.valid();
        let v: serde_json::Value = serde_json::from_str(&o.body).unwrap();
        let bodies = valid.entry(v["event_type"].as_str().unwrap().to_owned()).or_default();
        if bodies.len() < 64 {
            bodies.push(o.body);
        }
    }
    for (event_type, bodies) in &valid {
        let mean = bodies.iter().map(String::len).sum::<usize>() / bodies.len();
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::new("valid", format!("{event_type}/{mean}B")), bodies, |b, bodies| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % bodies.len();
                classify(&bodies[i], "sqs-id", &registry)
            })
        });
    }
    let legacy = r#"{"event_type":"monitor-app","client_id":"client-1","message":"Monitor app: CPU usage is high"}"#;
    group.bench_function("valid/legacy", |b| b.iter(|| classify(legacy, "sqs-id", &registry)));

    for kind in Invalid::ALL {
        let bodies: Vec<String> = (0..16).map(|_| generator.invalid(kind).body).collect();
        group.bench_with_input(BenchmarkId::new("rejected", kind.name()), &bodies, |b, bodies| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % bodies.len();
                classify(&bodies[i], "sqs-id", &registry)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
