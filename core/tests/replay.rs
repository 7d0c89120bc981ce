//! Record and replay on the core: a recorded session replays to identical actions; a change
//! is reported at the first step that differs; damaged files are refused or cut.

mod harness;

use harness::{connect, publish, Harness};
use jetmq_core::broker::BrokerConfig;
use jetmq_core::codec::{ProtocolVersion, PublishQos, QoS};
use jetmq_core::replay::{replay, ReplayError, ReplayReport};

fn recorded_session() -> Vec<u8> {
    let config = BrokerConfig::default();
    let mut h = Harness::with_seed(config.clone(), 11);
    h.start_recording(config, 11);
    let (s, _) = h.connect_ok(connect(ProtocolVersion::V5, "s", false));
    h.subscribe_ok(s, 1, "t/#", QoS::ExactlyOnce);
    let (p, _) = h.connect_ok(connect(ProtocolVersion::V311, "", true));
    h.send(p, &publish("t/1", "one", PublishQos::AtMostOnce, true));
    h.send(
        p,
        &publish(
            "t/2",
            "two",
            PublishQos::AtLeastOnce(harness::pid(1)),
            false,
        ),
    );
    h.advance(std::time::Duration::from_secs(20));
    h.recording.take().expect("recording")
}

#[test]
fn a_recorded_session_replays_identically() {
    let recording = recorded_session();
    match replay(&recording).expect("readable") {
        ReplayReport::Identical { steps, truncated } => {
            assert!(steps >= 8, "{steps} steps");
            assert!(!truncated);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_different_outcome_is_reported_at_its_step() {
    let mut recording = recorded_session();
    // The last 8 bytes of the file are the last step's digest.
    let len = recording.len();
    recording[len - 1] ^= 0x55;
    match replay(&recording).expect("readable") {
        ReplayReport::Differs {
            step,
            expected,
            actual,
            ..
        } => {
            let ReplayReport::Identical { steps, .. } = replay(&recorded_session()).expect("ok")
            else {
                unreachable!()
            };
            assert_eq!(step, steps, "the tampered step is the last one");
            assert_ne!(expected, actual);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn damaged_recordings_are_refused_or_cut() {
    assert_eq!(
        replay(b"not a recording").unwrap_err(),
        ReplayError::NotARecording
    );
    let mut wrong_version = recorded_session();
    wrong_version[8] = 99;
    assert_eq!(
        replay(&wrong_version).unwrap_err(),
        ReplayError::UnsupportedVersion(99)
    );
    // A recording cut in the middle of a frame (the recorder died) replays up to the cut.
    let recording = recorded_session();
    let cut = &recording[..recording.len() - 3];
    match replay(cut).expect("readable") {
        ReplayReport::Identical { truncated, .. } => assert!(truncated),
        other => panic!("{other:?}"),
    }
}
