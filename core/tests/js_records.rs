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

/// What a store hands back for a write: the message it stored.
fn stored(request: &jetmq_core::js::StoreRequest, seq: u64) -> jetmq_core::js::StoredMessage {
    let jetmq_core::js::StoreRequest::Publish {
        stream,
        subject,
        headers,
        payload,
    } = request
    else {
        panic!("not a write: {request:?}");
    };
    jetmq_core::js::StoredMessage {
        stream: *stream,
        subject: subject.clone(),
        seq,
        headers: headers
            .iter()
            .map(|h| (bytestring::ByteString::from(h.name), h.value.clone()))
            .collect(),
        payload: payload.clone(),
        pending_for: Vec::new(),
    }
}

#[test]
fn every_record_written_reads_back() {
    use bytes::Bytes;
    use jetmq_core::codec::{PublishProperties, QoS};
    use jetmq_core::js::records::{
        client_hash16, message_write, qos2_write, read_message, read_qos2, read_retained,
        read_session, read_v5_fields, record_stamp, retained_write, session_write, V5Fields,
        MESSAGES_PREFIX, PUB_HEADER,
    };
    use jetmq_core::js::{StoreRequest, Stream};

    let properties = PublishProperties {
        content_type: Some("text/plain".into()),
        ..PublishProperties::EMPTY
    };
    let v5 = V5Fields {
        properties: Some(&properties),
        expires_at: Some(1_700_000_000_123),
    };
    let message = stored(
        &message_write("a.b", QoS::ExactlyOnce, Bytes::from_static(b"hi"), v5),
        7,
    );
    assert_eq!(message.subject, format!("{MESSAGES_PREFIX}a.b"));
    assert_eq!(read_message(&message), Some(("a.b", QoS::ExactlyOnce)));
    let (props, expires) = read_v5_fields(&message.headers);
    assert_eq!(props.as_deref(), Some(&properties));
    assert_eq!(expires, Some(1_700_000_000_123));
    assert_eq!(
        read_retained(&message),
        None,
        "a message is no retained message"
    );

    let topic = bytestring::ByteString::from("a/b");
    let retained = retained_write(
        &topic,
        "a.b",
        QoS::AtLeastOnce,
        Bytes::from_static(b"x"),
        V5Fields::default(),
    );
    assert_eq!(
        read_retained(&stored(&retained, 8)),
        Some(("a.b", QoS::AtLeastOnce))
    );
    let delete = retained_write(&topic, "a.b", QoS::AtLeastOnce, Bytes::new(), v5);
    assert!(
        matches!(
            delete,
            StoreRequest::Purge {
                stream: Stream::Retained,
                ..
            }
        ),
        "an empty retained message deletes: {delete:?}"
    );

    let qos2 = stored(&qos2_write("c", 42, true), 9);
    assert_eq!(read_qos2(&qos2), Some((client_hash16("c").as_str(), 42)));
    assert_eq!(
        qos2.headers,
        [(PUB_HEADER.into(), "25".into())],
        "the NATS server's QoS 2 header: 2 and the flags"
    );

    let mut record = SessionRecord {
        id: "c".into(),
        ..SessionRecord::default()
    };
    record.jetmq.stamp = 11;
    let written = stored(&session_write(&record, Some(3)), 10);
    assert_eq!(read_session(&written), Some(record.clone()));
    assert_eq!(record_stamp(&written), 11);
    let mut elsewhere = written.clone();
    elsewhere.subject = jetmq_core::js::records::session_subject("other");
    assert_eq!(
        read_session(&elsewhere),
        None,
        "filed under another client id"
    );
}
