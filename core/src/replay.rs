//! Record and replay: a recording holds the broker's seed and configuration and every input
//! with its time, plus a digest of the actions each input produced. Replaying feeds the same
//! inputs to a fresh broker and reports the first step whose actions differ: since the core is
//! deterministic, a recording made by any shell reproduces the run byte for byte.
//!
//! Layout: the magic bytes `JETMQREC`, a version byte, then frames of a little-endian `u32`
//! length and a [postcard](https://docs.rs/postcard) body: first a [`RecordHeader`], then one
//! [`RecordedStep`] per input. Building frames is pure (into a `Vec<u8>`); writing them to a
//! file is the shell's business.

use serde::{Deserialize, Serialize};

use crate::broker::{Action, Broker, BrokerConfig, Input, Outbox};
use crate::time::Now;

/// The first bytes of a recording.
pub const MAGIC: &[u8; 8] = b"JETMQREC";
/// The format version this code writes and reads.
pub const VERSION: u8 = 1;

/// What a replay needs to build the same broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordHeader {
    /// The broker's seed.
    pub seed: u64,
    /// The broker's configuration.
    pub config: BrokerConfig,
    /// The time the broker was created with.
    pub start: Now,
}

/// One input as recorded: its time, the input, and a digest of the actions it produced.
#[derive(Debug, Serialize, Deserialize)]
pub struct RecordedStep {
    /// The time passed with the input.
    pub now: Now,
    /// The input.
    pub input: Input,
    /// [`actions_digest`] of the actions `handle` appended, little-endian (fixed width, so
    /// a tool can find it at the end of its frame).
    pub digest: [u8; 8],
}

/// Why a recording cannot be replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayError {
    /// The file does not start with [`MAGIC`].
    NotARecording,
    /// The file was written by another format version.
    UnsupportedVersion(u8),
    /// A frame is cut short or cannot be decoded; `step` is its index (0 is the header).
    Corrupt {
        /// The frame's index.
        step: usize,
    },
}

impl std::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotARecording => f.write_str("not a jetmq recording (wrong magic bytes)"),
            Self::UnsupportedVersion(v) => {
                write!(
                    f,
                    "recording format version {v}; this jetmq reads version {VERSION}"
                )
            }
            Self::Corrupt { step } => write!(
                f,
                "frame {step} is truncated or damaged (a recording cut off by a crash ends there)"
            ),
        }
    }
}

impl std::error::Error for ReplayError {}

/// The outcome of a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayReport {
    /// Every step produced the recorded actions.
    Identical {
        /// How many steps were replayed.
        steps: usize,
        /// Whether the recording ended in a cut-off frame (the recording process died); the
        /// steps before it were compared.
        truncated: bool,
    },
    /// Step `step` (counting from 1) produced other actions than recorded.
    Differs {
        /// The step's index, from 1.
        step: usize,
        /// The input of that step, for the report.
        input: String,
        /// The recorded digest.
        expected: u64,
        /// The digest of the actions the replay produced.
        actual: u64,
        /// The actions the replay produced.
        actions: String,
    },
}

/// A 64-bit FNV-1a digest of the actions, over their serialized form: equal actions give
/// equal digests on every machine.
#[must_use]
pub fn actions_digest(actions: &[Action]) -> u64 {
    let bytes = postcard::to_allocvec(actions).unwrap_or_default();
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Appends the magic bytes, the version and the header frame to `out`.
pub fn encode_header(header: &RecordHeader, out: &mut Vec<u8>) {
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    push_frame(&postcard::to_allocvec(header).unwrap_or_default(), out);
}

/// Serializes an input, before it is handed to the broker (which consumes it).
#[must_use]
pub fn encode_input(input: &Input) -> Vec<u8> {
    postcard::to_allocvec(input).unwrap_or_default()
}

/// Appends one step frame: the time, an input serialized with [`encode_input`], and the
/// digest of the actions it produced.
pub fn encode_step(now: Now, input: &[u8], digest: u64, out: &mut Vec<u8>) {
    // A RecordedStep serialized field by field: the same bytes as serializing the struct.
    let mut body = postcard::to_allocvec(&now).unwrap_or_default();
    body.extend_from_slice(input);
    body.extend_from_slice(&digest.to_le_bytes());
    push_frame(&body, out);
}

fn push_frame(body: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(body);
}

/// Splits a recording into its header and step frames; a cut-off last frame is reported in
/// the returned flag rather than as an error.
fn frames(bytes: &[u8]) -> Result<(RecordHeader, Vec<&[u8]>, bool), ReplayError> {
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or(ReplayError::NotARecording)?;
    let (&version, mut rest) = rest.split_first().ok_or(ReplayError::NotARecording)?;
    if version != VERSION {
        return Err(ReplayError::UnsupportedVersion(version));
    }
    let mut frames = Vec::new();
    let mut truncated = false;
    while !rest.is_empty() {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            truncated = true;
            break;
        };
        let len = u32::from_le_bytes(*len) as usize;
        let Some(frame) = tail.get(..len) else {
            truncated = true;
            break;
        };
        frames.push(frame);
        rest = &tail[len..];
    }
    let Some((&first, steps)) = frames.split_first() else {
        return Err(ReplayError::Corrupt { step: 0 });
    };
    let header: RecordHeader =
        postcard::from_bytes(first).map_err(|_| ReplayError::Corrupt { step: 0 })?;
    Ok((header, steps.to_vec(), truncated))
}

/// Replays a recording on a fresh broker and compares every step's actions.
///
/// # Errors
///
/// A [`ReplayError`] when the bytes are not a readable recording.
pub fn replay(bytes: &[u8]) -> Result<ReplayReport, ReplayError> {
    let (header, steps, truncated) = frames(bytes)?;
    let mut broker = Broker::new(header.config, header.seed, header.start);
    let mut out = Outbox::new();
    for (i, frame) in steps.iter().enumerate() {
        let step: RecordedStep =
            postcard::from_bytes(frame).map_err(|_| ReplayError::Corrupt { step: i + 1 })?;
        let input = format!("{:?}", step.input);
        out.clear();
        broker.handle(step.now, step.input, &mut out);
        let actual = actions_digest(out.actions());
        let expected = u64::from_le_bytes(step.digest);
        if actual != expected {
            return Ok(ReplayReport::Differs {
                step: i + 1,
                input,
                expected,
                actual,
                actions: format!("{:?}", out.actions()),
            });
        }
    }
    Ok(ReplayReport::Identical {
        steps: steps.len(),
        truncated,
    })
}
