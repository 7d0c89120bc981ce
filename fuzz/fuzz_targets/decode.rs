//! Arbitrary bytes through the packet decoder of either version and direction: no panic, and
//! every packet it accepts re-encodes to its exact encoded length.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let mut decoder = jetmq_fuzz::decoder_for(selector);
    let mut buf = BytesMut::from(bytes);
    jetmq_fuzz::decode_all(&mut decoder, &mut buf);
});
