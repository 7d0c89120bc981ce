//! The contract suite ([`jetmq_store::contract`]) against the embedded store, each case on a
//! fresh store and then all of them on one shared store, and again after a reopen.

mod common;

use jetmq_store::contract::{self, CASES};
use jetmq_store::Store;

#[test]
fn every_case_on_a_fresh_store() {
    for case in CASES {
        let dir = common::TempDir::new(case.name);
        let (store, _) = Store::open(dir.config()).expect("open");
        (case.run)(&|r| store.execute(r), "t");
        store.close().expect("close");
    }
}

#[test]
fn all_cases_share_one_store_and_survive_a_reopen() {
    let dir = common::TempDir::new("shared");
    let (store, _) = Store::open(dir.config()).expect("open");
    contract::run_all(&|r| store.execute(r), "a");
    store.close().expect("close");
    let (store, report) = Store::open(dir.config()).expect("reopen");
    assert!(!report.unclean_shutdown, "{report}");
    contract::run_all(&|r| store.execute(r), "b");
}

#[test]
fn ack_wait_redelivery() {
    let dir = common::TempDir::new("ack_wait");
    let (store, _) = Store::open(dir.config()).expect("open");
    contract::ack_wait_redelivery(&|r| store.execute(r), &store, "t");
}
