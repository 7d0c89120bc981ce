//! Record formats and hashes of the stream layout, checked against the NATS server's values.

use jetmq_core::js::records::{
    client_hash, parse_retained_flags, retained_flags, split_hash_and_packet_id, SessionRecord,
    QOS2_PREFIX,
};

#[test]
fn client_hash_matches_the_nats_server_test_vectors() {
    for (input, expected) in [
        ("sub", "ZCesaM56"),
        ("victim", "RZTTMeVv"),
        ("mqtt", "4iXCbC8U"),
        ("cid-03579431", "1fbmU9bb"),
        ("cid-09191235", "1fbmU9bb"),
    ] {
        assert_eq!(client_hash(input), expected, "{input}");
    }
}

#[test]
fn nats_server_session_records_parse() {
    let real = br#"{"origin":"diCEI9BV","id":"cloud-connector-m4d-300","subs":{">":1},"cons":{">":{"durable_name":"qhBPGHtT_NCkJvrtXsJVTYe85LLtHI5","deliver_policy":"new","ack_policy":"explicit","ack_wait":30000000000,"filter_subject":"$MQTT.msgs.>","replay_policy":"instant","max_ack_pending":1024,"deliver_subject":"$MQTT.sub.NCkJvrtXsJVTYe85LLtHEV","num_replicas":0}}}"#;
    let record = SessionRecord::from_json(real).expect("a NATS server record parses");
    assert_eq!(record.id, "cloud-connector-m4d-300");
    assert_eq!(record.subs.get(">"), Some(&1));
    assert!(!record.clean);
    let again = SessionRecord::from_json(&record.to_json()).expect("round trip");
    assert_eq!(again, record);
    assert!(SessionRecord::from_json(b"null").is_none());
    assert!(SessionRecord::from_json(b"{}").is_none(), "id is required");
}

#[test]
fn retained_flags_follow_the_publish_nibble() {
    assert_eq!(retained_flags(0), "1");
    assert_eq!(retained_flags(1), "3");
    assert_eq!(retained_flags(2), "5");
    assert_eq!(parse_retained_flags("5"), Some(2));
    assert_eq!(parse_retained_flags(" 3 "), Some(1));
    assert_eq!(parse_retained_flags("7"), None, "QoS 3 is invalid");
    assert_eq!(parse_retained_flags("f"), None);
    assert_eq!(parse_retained_flags("x"), None);
}

#[test]
fn qos2_subjects_split_back() {
    let subject = format!("{QOS2_PREFIX}abcdEFGH12345678.42");
    assert_eq!(
        split_hash_and_packet_id(&subject, QOS2_PREFIX),
        Some(("abcdEFGH12345678", 42))
    );
    assert_eq!(
        split_hash_and_packet_id("$MQTT.qos2.in.x", QOS2_PREFIX),
        None
    );
}

#[test]
fn message_properties_round_trip_through_their_header() {
    use jetmq_core::codec::{PublishProperties, UserProperty};
    use jetmq_core::js::records::{parse_properties_header, properties_header};
    let props = PublishProperties {
        message_expiry_interval: Some(30),
        content_type: Some("application/json".into()),
        response_topic: Some("r/x".into()),
        correlation_data: Some(bytes::Bytes::from_static(b"\xff\x00")),
        user_properties: vec![UserProperty {
            name: "a".into(),
            value: "b".into(),
        }],
        ..PublishProperties::default()
    };
    let header = properties_header(&props);
    assert_eq!(header.name, "Jetmq-Props");
    assert!(header.value.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        parse_properties_header(&header.value).as_deref(),
        Some(&props)
    );
    for bad in ["", "0", "zz", "3000", &format!("{}00", header.value)] {
        assert_eq!(parse_properties_header(bad), None, "{bad}");
    }
}
