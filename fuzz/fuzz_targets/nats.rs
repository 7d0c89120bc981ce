//! Arbitrary bytes from a "server" through the NATS protocol decoder and the client state
//! machine, whole and split at a point the input chooses: no panic, the same operations
//! either way, and every message is re-encodable.
#![no_main]

use bytes::BytesMut;
use jetmq_core::nats::{ConnectOptions, Decoder, Event, NatsClient, ServerOp};
use libfuzzer_sys::fuzz_target;

fn decode(chunks: &[&[u8]]) -> Result<Vec<ServerOp>, String> {
    let mut d = Decoder::new(1 << 16);
    let mut buf = BytesMut::new();
    let mut ops = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match d.decode(&mut buf) {
                Ok(Some(op)) => ops.push(op),
                Ok(None) => break,
                Err(e) => return Err(e.to_string()),
            }
        }
    }
    Ok(ops)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let at = usize::from(cut) * rest.len() / 256;
    let whole = decode(&[rest]);
    let split = decode(&[&rest[..at], &rest[at..]]);
    if let (Ok(a), Ok(b)) = (&whole, &split) {
        assert_eq!(a, b);
    }
    if let Ok(ops) = &whole {
        for op in ops {
            if let ServerOp::Msg(m) = op {
                if let Some(h) = &m.headers {
                    assert_eq!(
                        jetmq_core::nats::Headers::decode(&h.encode()).as_ref(),
                        Some(h)
                    );
                }
            }
        }
    }
    // The client asks for TLS when the input's first byte is odd: after `INFO` it stops, and
    // once told TLS is up it reads on (the same bytes stand in for the decrypted stream).
    let mut client = NatsClient::new(
        ConnectOptions {
            tls_required: cut % 2 == 1,
            ..ConnectOptions::default()
        },
        1 << 16,
    );
    let sid = client.subscribe("a.>", None);
    client.connection_started();
    let mut events = Vec::new();
    let mut buf = BytesMut::from(rest);
    let _ = client.received(&mut buf, &mut events);
    if events.iter().any(|e| matches!(e, Event::UpgradeToTls(_))) {
        client.tls_established(&mut events);
        let _ = client.received(&mut buf, &mut events);
    }
    client.unsubscribe(sid);
    let _ = client.publish("a.b", Some("r"), None, rest);
    let _ = client.take_output();
});
