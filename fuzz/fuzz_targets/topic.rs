//! Arbitrary strings through topic and filter parsing and the NATS subject mapping: no panic,
//! every valid topic name maps to a subject without whitespace or control bytes and back to
//! itself, every valid filter matches consistently, and the reverse mapping accepts anything.
#![no_main]

use jetmq_core::topic::{subject, Subscription, TopicFilter, TopicName};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The reverse mapping takes any subject.
    let _ = subject::subject_to_topic(text);
    let _ = subject::subject_to_filter(text);
    let _ = subject::subject_to_topic_name(text);

    if let Ok(name) = TopicName::try_from(text) {
        let subj = subject::topic_to_subject(&name);
        assert!(!subj.bytes().any(|b| b <= b' ' || b == 0x7f), "{subj:?}");
        assert!(!subj.split('.').any(str::is_empty), "{subj:?}");
        assert_eq!(subject::subject_to_topic(&subj), name.as_str());
        let hash = TopicFilter::try_from("#").expect("valid filter");
        assert_eq!(hash.matches(&name), !name.starts_with_dollar());
        if let Ok(itself) = TopicFilter::try_from(text) {
            assert!(
                itself.matches(&name),
                "a name without wildcards matches itself"
            );
        }
    }
    if let Ok(filter) = TopicFilter::try_from(text) {
        let subj = subject::filter_to_subject(&filter);
        let _ = subject::filter_parent_subject(&subj);
        let _ = subject::is_reserved_subject_filter(&subj);
    }
    if let Ok(sub) = Subscription::try_from(text) {
        assert!(sub.as_str() == text);
        let _ = sub.share_group();
    }
});
