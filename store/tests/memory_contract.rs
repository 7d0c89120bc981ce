//! The same contract suite against the core's in-memory reference store
//! (`jetmq_core::js::memory::MemoryStore`), which the broker's tests and simulation use: the
//! model the simulation trusts must behave like the store the server runs on.

use std::cell::RefCell;

use jetmq_core::js::memory::MemoryStore;
use jetmq_store::contract::CASES;

#[test]
fn the_reference_store_keeps_the_contract() {
    let mut failed = Vec::new();
    for case in CASES {
        let store = RefCell::new(MemoryStore::new());
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (case.run)(&|r| store.borrow_mut().execute(&r), "m");
        }));
        if result.is_err() {
            failed.push(case.name);
        }
    }
    assert!(
        failed.is_empty(),
        "contract cases the reference store breaks: {failed:?}"
    );
}
