//! The same bytes fed whole and in chunks must decode to the same packets and the same outcome.
//! The second input byte seeds the chunk sizes.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [selector, chunk_seed, bytes @ ..] = data else {
        return;
    };
    let mut whole = jetmq_fuzz::decoder_for(*selector);
    let (expected, expected_err) = jetmq_fuzz::decode_all(&mut whole, &mut BytesMut::from(bytes));

    let mut chunked = jetmq_fuzz::decoder_for(*selector);
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    let mut failed = false;
    let mut rest = bytes;
    let mut state = u32::from(*chunk_seed) | 1;
    while !rest.is_empty() && !failed {
        // A small xorshift keeps chunk sizes varied but reproducible from the input.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let take = (state as usize % 17 + 1).min(rest.len());
        buf.extend_from_slice(&rest[..take]);
        rest = &rest[take..];
        let (mut got, err) = jetmq_fuzz::decode_all(&mut chunked, &mut buf);
        packets.append(&mut got);
        failed = err;
    }
    assert_eq!(packets, expected);
    assert_eq!(failed, expected_err);
});
