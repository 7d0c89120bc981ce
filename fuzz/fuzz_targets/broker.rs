//! Arbitrary input sequences to the broker: connections opening and closing, arbitrary bytes
//! (often valid packets), time passing, store replies succeeding and failing in any order.
//! The broker must never panic, never write to a connection after closing it, and never
//! answer a store request twice.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    jetmq_fuzz::broker_sequence(data);
});
