//! Record and replay on the core: a recorded session replays to identical actions; a change
//! is reported at the first step that differs; damaged files are refused or cut; recordings
//! of another build (another format version, other recorded types, format 1) are refused
//! with a message naming the build that wrote them.

mod harness;

use harness::{connect, publish, Harness};
use jetmq_core::broker::BrokerConfig;
use jetmq_core::codec::{ProtocolVersion, PublishQos, QoS};
use jetmq_core::replay::{
    recorded_by, replay, types_fingerprint, Build, ReplayError, ReplayReport, JETMQ_VERSION, MAGIC,
    VERSION,
};

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
    // A preamble cut short.
    let recording = recorded_session();
    assert_eq!(
        replay(&recording[..12]).unwrap_err(),
        ReplayError::Corrupt { step: 0 }
    );
    // A recording cut in the middle of a frame (the recorder died) replays up to the cut.
    let recording = recorded_session();
    let cut = &recording[..recording.len() - 3];
    match replay(cut).expect("readable") {
        ReplayReport::Identical { truncated, .. } => assert!(truncated),
        other => panic!("{other:?}"),
    }
}

/// The recording with its preamble replaced: written as by a build of jetmq `jetmq`, format
/// `format`, recorded types `types`.
fn as_written_by(recording: &[u8], format: u8, jetmq: &str, types: u64) -> Vec<u8> {
    let build = Build {
        jetmq: jetmq.to_owned(),
        format,
        types,
    };
    jetmq_core::replay::relabel(recording, &build).expect("a recording")
}

#[test]
fn a_recording_names_the_build_that_wrote_it() {
    let recording = recorded_session();
    assert_eq!(recorded_by(&recording), Ok(Build::current()));
    assert_eq!(Build::current().jetmq, env!("CARGO_PKG_VERSION"));
    assert_eq!(Build::current().format, VERSION);
    // The same preamble rebuilt by hand is the same file: the layout is as documented.
    assert_eq!(
        as_written_by(&recording, VERSION, JETMQ_VERSION, types_fingerprint()),
        recording
    );
}

#[test]
fn a_recording_of_another_format_version_is_refused_naming_its_build() {
    let other = as_written_by(&recorded_session(), VERSION + 1, "9.9.9", 0x3f9a);
    let err = replay(&other).unwrap_err();
    assert_eq!(
        err,
        ReplayError::OtherFormat(Build {
            jetmq: "9.9.9".into(),
            format: VERSION + 1,
            types: 0x3f9a,
        })
    );
    let message = err.to_string();
    for part in [
        format!(
            "recorded by jetmq 9.9.9 (format {}, types 0000000000003f9a)",
            VERSION + 1
        ),
        format!("this build is {}", Build::current()),
        "replay it with the build that recorded it (jetmq 9.9.9)".into(),
    ] {
        assert!(message.contains(&part), "{part:?} in {message}");
    }
}

#[test]
fn a_recording_with_other_recorded_types_is_refused_naming_its_build() {
    let other = as_written_by(
        &recorded_session(),
        VERSION,
        JETMQ_VERSION,
        !types_fingerprint(),
    );
    let err = replay(&other).unwrap_err();
    assert_eq!(
        err,
        ReplayError::OtherTypes(Build {
            types: !types_fingerprint(),
            ..Build::current()
        })
    );
    let message = err.to_string();
    for part in [
        format!("types {:016x}", !types_fingerprint()),
        format!("types {:016x}", types_fingerprint()),
        "the recorded types differ".into(),
        "replay it with the build that recorded it".into(),
    ] {
        assert!(message.contains(&part), "{part:?} in {message}");
    }
}

#[test]
fn a_version_1_recording_is_refused_clearly() {
    // Format 1: the magic bytes, the version byte and the frames, no preamble.
    let recording = recorded_session();
    let mut v1 = MAGIC.to_vec();
    v1.push(1);
    v1.extend_from_slice(&recording[MAGIC.len() + 1 + 2 + JETMQ_VERSION.len() + 8..]);
    let err = replay(&v1).unwrap_err();
    assert_eq!(err, ReplayError::UnsupportedVersion(1));
    assert_eq!(recorded_by(&v1), Err(ReplayError::UnsupportedVersion(1)));
    let message = err.to_string();
    assert!(
        message.contains("format 1")
            && message.contains("replay it with the build that recorded it"),
        "{message}"
    );
}
