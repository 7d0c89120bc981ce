//! Topic matching: one topic name against 10 000 topic filters, jetmq's `TopicFilter::matches`
//! against rumqttc's `mqttbytes::matches` on the same strings.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use jetmq_benches::{filters, TOPIC};
use jetmq_core::topic::{TopicFilter, TopicName};

fn match_10k(c: &mut Criterion) {
    let raw = filters(10_000);
    let ours: Vec<TopicFilter> = raw
        .iter()
        .map(|f| TopicFilter::try_from(f.as_str()).expect("valid filter"))
        .collect();
    let topic = TopicName::try_from(TOPIC).expect("valid topic");
    let expected = ours.iter().filter(|f| f.matches(&topic)).count();
    let theirs = raw
        .iter()
        .filter(|f| rumqttc::mqttbytes::matches(TOPIC, f))
        .count();
    assert_eq!(expected, theirs, "both matchers agree");
    assert!(expected > 0, "the topic matches some filters");

    let mut group = c.benchmark_group("topic_match/10k_filters");
    group.throughput(Throughput::Elements(raw.len() as u64));
    group.bench_function("jetmq", |b| {
        b.iter(|| ours.iter().filter(|f| f.matches(&topic)).count());
    });
    group.bench_function("mqttbytes", |b| {
        b.iter(|| {
            raw.iter()
                .filter(|f| rumqttc::mqttbytes::matches(TOPIC, f))
                .count()
        });
    });
    group.finish();
}

criterion_group!(benches, match_10k);
criterion_main!(benches);
