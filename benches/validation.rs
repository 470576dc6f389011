//! Envelope parsing + validation per message, on both benchmark workloads: valid
//! events of each type (the demo templates, and the format-heavy ones of
//! `deployments/bench/`) and each rejection kind.

use std::collections::BTreeMap;
use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use event_processor::producers::generator::{Generator, Invalid, Mix};
use event_processor::producers::templates::EventsFile;
use event_processor::registry::{Registry, RegistryFile};
use event_processor::validation::classify;

/// Valid bodies of every event type (64 each) and each kind of bad input (16 each).
fn workload(c: &mut Criterion, name: &str, registry: &Registry, events: EventsFile) {
    let mut generator = Generator::new(events, Mix::default(), None, Some(42));
    let mut group = c.benchmark_group(format!("classify_{name}"));
    group.throughput(Throughput::Elements(1));

    let mut valid: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let types = generator_types(&mut generator);
    while valid.values().map(Vec::len).sum::<usize>() < types * 64 {
        let o = generator.valid();
        let v: serde_json::Value = serde_json::from_str(&o.body).unwrap();
        let bodies = valid.entry(v["event_type"].as_str().unwrap().to_owned()).or_default();
        if bodies.len() < 64 {
            bodies.push(o.body);
        }
    }
    let mut cycle = |id: BenchmarkId, bodies: &Vec<String>| {
        group.bench_with_input(id, bodies, |b, bodies| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % bodies.len();
                classify(&bodies[i], "sqs-id", registry)
            })
        });
    };
    for (event_type, bodies) in &valid {
        let mean = bodies.iter().map(String::len).sum::<usize>() / bodies.len();
        cycle(BenchmarkId::new("valid", format!("{event_type}/{mean}B")), bodies);
    }
    for kind in Invalid::ALL {
        let bodies: Vec<String> = (0..16).map(|_| generator.invalid(kind).body).collect();
        cycle(BenchmarkId::new("rejected", kind.name()), &bodies);
    }
    group.finish();
}

/// How many event types a generator's templates produce.
fn generator_types(generator: &mut Generator) -> usize {
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..1000 {
        let v: serde_json::Value = serde_json::from_str(&generator.valid().body).unwrap();
        seen.insert(v["event_type"].as_str().unwrap().to_owned());
    }
    seen.len()
}

fn bench(c: &mut Criterion) {
    let demo = Registry::from_file(&RegistryFile::demo()).unwrap();
    workload(c, "demo", &demo, EventsFile::demo());
    let legacy = r#"{"event_type":"monitor-app","client_id":"client-1","message":"Monitor app: CPU usage is high"}"#;
    c.bench_function("classify_demo/valid/legacy", |b| b.iter(|| classify(legacy, "sqs-id", &demo)));

    let bench = Path::new("deployments/bench");
    let formats = Registry::from_file(&RegistryFile::read(&bench.join("formats-registry.json")).unwrap()).unwrap();
    workload(c, "formats", &formats, EventsFile::read(&bench.join("formats-events.json")).unwrap());
}

criterion_group!(benches, bench);
criterion_main!(benches);
