//! Record and replay: a recording holds the broker's seed and configuration and every input
//! with its time, plus a digest of the actions each input produced. Replaying feeds the same
//! inputs to a fresh broker and reports the first step whose actions differ: since the core is
//! deterministic, a recording made by any shell reproduces the run byte for byte.
//!
//! # Layout
//!
//! 1. The magic bytes `JETMQREC` and a format version byte ([`VERSION`]).
//! 2. A preamble of fixed layout that every format from 2 on keeps, so that any build can say
//!    who wrote a file it cannot read: a little-endian `u16` length and that many bytes of
//!    UTF-8, the jetmq version that wrote it ([`JETMQ_VERSION`]), then the 8 bytes of the
//!    [types fingerprint](types_fingerprint), little-endian.
//! 3. Frames of a little-endian `u32` length and a [postcard](https://docs.rs/postcard)
//!    body: first a [`RecordHeader`], then one [`RecordedStep`] per input.
//!
//! Building frames is pure (into a `Vec<u8>`); writing them to a file is the shell's business.
//!
//! # Which builds can replay a recording
//!
//! Postcard is positional: a body means something only to code with the very same types. The
//! fingerprint is a hash of the serde shape of [`RecordHeader`] and [`RecordedStep`] and of
//! everything they contain ([`BrokerConfig`], [`Input`], ...), traced from the types
//! themselves with [`serde_reflection`]: a field added, renamed or moved, or an enum variant
//! added, changes it without anyone having to remember. A recording of another format or with
//! another fingerprint is refused with a [`ReplayError`] that names the build that wrote it
//! (replay it with that build) instead of being decoded into wrong values.
//!
//! Golden recordings in `core/tests/recordings/` are replayed by the test `replay_golden`,
//! which also checks their fingerprint: after a change to a recorded type, bump [`VERSION`]
//! if the layout above changed, and regenerate them with
//! `JETMQ_BLESS=1 cargo test -p jetmq-core --test replay_golden`.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::broker::{Action, Broker, BrokerConfig, Input, Outbox};
use crate::time::Now;

/// The first bytes of a recording.
pub const MAGIC: &[u8; 8] = b"JETMQREC";
/// The format version this code writes and reads: the layout of the file, not of the recorded
/// types (the [fingerprint](types_fingerprint) covers those).
pub const VERSION: u8 = 2;
/// The version of jetmq that this build is, as written in the recordings it makes.
pub const JETMQ_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The build a recording was written by, as its preamble says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    /// The jetmq version.
    pub jetmq: String,
    /// The format version.
    pub format: u8,
    /// The fingerprint of the recorded types.
    pub types: u64,
}

impl Build {
    /// This build: what the recordings it writes say and what it can replay.
    #[must_use]
    pub fn current() -> Self {
        Self {
            jetmq: JETMQ_VERSION.to_owned(),
            format: VERSION,
            types: types_fingerprint(),
        }
    }
}

impl std::fmt::Display for Build {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "jetmq {} (format {}, types {:016x})",
            self.jetmq, self.format, self.types
        )
    }
}

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
    /// The file was written in a format from before the preamble (format 1), which names no
    /// build.
    UnsupportedVersion(u8),
    /// The file was written by a build with another format version.
    OtherFormat(Build),
    /// The file was written by a build whose recorded types differ from this build's.
    OtherTypes(Build),
    /// A frame is cut short or cannot be decoded; `step` is its index (0 is the header and
    /// the preamble).
    Corrupt {
        /// The frame's index.
        step: usize,
    },
}

impl std::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotARecording => f.write_str("not a jetmq recording (wrong magic bytes)"),
            Self::UnsupportedVersion(v) => write!(
                f,
                "recorded in format {v} by a jetmq build from before recordings named their \
                 build; this build is {}: replay it with the build that recorded it",
                Build::current()
            ),
            Self::OtherFormat(recorded) => write!(
                f,
                "recorded by {recorded}; this build is {}, which reads format {VERSION} only: \
                 replay it with the build that recorded it (jetmq {})",
                Build::current(),
                recorded.jetmq
            ),
            Self::OtherTypes(recorded) => write!(
                f,
                "recorded by {recorded}; this build is {}: the recorded types differ, so its \
                 inputs cannot be decoded here: replay it with the build that recorded it \
                 (jetmq {} built from the same source)",
                Build::current(),
                recorded.jetmq
            ),
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

/// The serde shapes of the recorded types ([`RecordHeader`], [`RecordedStep`] and all they
/// contain) as traced by [`serde_reflection`], in JSON; traced once, on first use.
///
/// # Errors
///
/// The tracer's message when a recorded type cannot be traced (a type with a `Deserialize`
/// that refuses every value the tracer makes up needs a sample here).
pub fn recorded_types() -> Result<&'static str, &'static str> {
    static TYPES: OnceLock<Result<String, String>> = OnceLock::new();
    TYPES
        .get_or_init(trace_recorded_types)
        .as_ref()
        .map(String::as_str)
        .map_err(String::as_str)
}

/// The fingerprint of the recorded types: the first 8 bytes of the SHA-256 of
/// [`recorded_types`], big-endian; computed once, on first use.
#[must_use]
pub fn types_fingerprint() -> u64 {
    static FINGERPRINT: OnceLock<u64> = OnceLock::new();
    *FINGERPRINT.get_or_init(|| {
        // Types that cannot be traced still get a fingerprint of their own (the test
        // `replay_golden` fails on them).
        let text = match recorded_types() {
            Ok(types) => types.to_owned(),
            Err(e) => format!("untraceable: {e}"),
        };
        let hash = Sha256::digest(text.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash[..8]);
        u64::from_be_bytes(first)
    })
}

/// Traces the recorded types into a registry and serializes it.
///
/// serde-reflection finds the variants of an enum only when that enum is traced on its own
/// (`trace_type` repeats until it has seen every variant); an enum met only inside another
/// type is left incomplete, and taking the registry then fails with its name. So every enum
/// the recorded types contain is traced here first: a new one makes tracing fail (and the
/// test `replay_golden` with it) until it is added to this list, and a variant or field added
/// to a listed type changes the fingerprint with nothing to remember.
fn trace_recorded_types() -> Result<String, String> {
    use serde_reflection::{Error, Samples, Tracer, TracerConfig};

    use crate::broker::{AuthDecision, Cluster, ListenerKind, Overflow};
    use crate::codec::{ConnectReason, QoS};
    use crate::js::{Rejection, StoreError, StoreReply, Stream};

    // Non-zero integers (connection and packet ids, topic aliases, receive maximum) refuse 0,
    // the tracer's default value: serde-reflection's documented way is another default.
    let config = TracerConfig::default()
        .default_u8_value(1)
        .default_u16_value(1)
        .default_u32_value(1)
        .default_u64_value(1)
        .default_u128_value(1);
    let mut tracer = Tracer::new(config);
    let samples = Samples::new();
    let failed = |e: Error| format!("{e}: {}", e.explanation().trim());
    macro_rules! trace {
        ($($t:ty),* $(,)?) => {
            $(tracer.trace_type::<$t>(&samples).map_err(failed)?;)*
        };
    }
    // The enums first (each needs its own trace), then the two recorded frames.
    trace!(
        Input,
        AuthDecision,
        ConnectReason,
        ListenerKind,
        Result<StoreReply, StoreError>,
        StoreReply,
        StoreError,
        Rejection,
        Stream,
        Overflow,
        Cluster,
        QoS,
        RecordHeader,
        RecordedStep,
    );
    let registry = tracer.registry().map_err(|e| match e {
        Error::MissingVariants(names) => format!(
            "the recorded enums {names:?} are not traced on their own: add them to \
             `trace_recorded_types` in core/src/replay.rs"
        ),
        e => failed(e),
    })?;
    serde_json::to_string_pretty(&registry).map_err(|e| e.to_string())
}

/// Appends the magic bytes, the version, the preamble naming this build and the header frame
/// to `out`.
pub fn encode_header(header: &RecordHeader, out: &mut Vec<u8>) {
    push_preamble(&Build::current(), out);
    push_frame(&postcard::to_allocvec(header).unwrap_or_default(), out);
}

/// The frames of `recording` under the preamble `build` writes: what that build would have
/// recorded (for tests of refusals, and for tools that know two builds record alike).
///
/// # Errors
///
/// `recording` is not a recording this build can read the preamble of.
pub fn relabel(recording: &[u8], build: &Build) -> Result<Vec<u8>, ReplayError> {
    let (_, frames) = preamble(recording)?;
    let mut out = Vec::with_capacity(recording.len());
    push_preamble(build, &mut out);
    out.extend_from_slice(frames);
    Ok(out)
}

/// Appends the magic bytes, the format version and the preamble naming `build`.
fn push_preamble(build: &Build, out: &mut Vec<u8>) {
    out.extend_from_slice(MAGIC);
    out.push(build.format);
    let jetmq = build.jetmq.as_bytes();
    let len = u16::try_from(jetmq.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&jetmq[..usize::from(len)]);
    out.extend_from_slice(&build.types.to_le_bytes());
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

/// Reads the magic bytes, the version and the preamble: the build that wrote the recording
/// and the bytes after the preamble.
fn preamble(bytes: &[u8]) -> Result<(Build, &[u8]), ReplayError> {
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or(ReplayError::NotARecording)?;
    let (&format, rest) = rest.split_first().ok_or(ReplayError::NotARecording)?;
    if format < 2 {
        return Err(ReplayError::UnsupportedVersion(format));
    }
    let corrupt = ReplayError::Corrupt { step: 0 };
    let (len, rest) = rest.split_first_chunk::<2>().ok_or(corrupt.clone())?;
    let (jetmq, rest) = rest
        .split_at_checked(usize::from(u16::from_le_bytes(*len)))
        .ok_or(corrupt.clone())?;
    let jetmq = std::str::from_utf8(jetmq).map_err(|_| corrupt.clone())?;
    let (types, rest) = rest.split_first_chunk::<8>().ok_or(corrupt)?;
    let build = Build {
        jetmq: jetmq.to_owned(),
        format,
        types: u64::from_le_bytes(*types),
    };
    Ok((build, rest))
}

/// The build that wrote a recording, read from its preamble, whether or not this build can
/// replay it.
///
/// # Errors
///
/// [`ReplayError::NotARecording`], [`ReplayError::UnsupportedVersion`] for a file with no
/// preamble, or [`ReplayError::Corrupt`] for a damaged one.
pub fn recorded_by(bytes: &[u8]) -> Result<Build, ReplayError> {
    preamble(bytes).map(|(build, _)| build)
}

/// A recording read back: its header, and its steps, decoded one at a time.
#[derive(Debug)]
pub struct Recording<'a> {
    /// What a replay needs to build the same broker.
    pub header: RecordHeader,
    /// Whether the recording ends in a cut-off frame (the recording process died).
    pub truncated: bool,
    frames: Vec<&'a [u8]>,
}

impl<'a> Recording<'a> {
    /// Reads a recording that this build can replay: its preamble must name this build's
    /// format and types fingerprint.
    ///
    /// # Errors
    ///
    /// A [`ReplayError`] saying why not, naming the build that wrote it when the preamble is
    /// readable.
    pub fn read(bytes: &'a [u8]) -> Result<Self, ReplayError> {
        let (build, mut rest) = preamble(bytes)?;
        if build.format != VERSION {
            return Err(ReplayError::OtherFormat(build));
        }
        if build.types != types_fingerprint() {
            return Err(ReplayError::OtherTypes(build));
        }
        let mut frames = Vec::new();
        let mut truncated = false;
        while !rest.is_empty() {
            let Some((len, tail)) = rest.split_first_chunk::<4>() else {
                truncated = true;
                break;
            };
            let Some((frame, after)) = tail.split_at_checked(u32::from_le_bytes(*len) as usize)
            else {
                truncated = true;
                break;
            };
            frames.push(frame);
            rest = after;
        }
        let Some((&first, steps)) = frames.split_first() else {
            return Err(ReplayError::Corrupt { step: 0 });
        };
        let header = postcard::from_bytes(first).map_err(|_| ReplayError::Corrupt { step: 0 })?;
        Ok(Self {
            header,
            truncated,
            frames: steps.to_vec(),
        })
    }

    /// How many steps the recording holds (a cut-off last one not counted).
    #[must_use]
    pub fn step_count(&self) -> usize {
        self.frames.len()
    }

    /// The steps in order; one that cannot be decoded is [`ReplayError::Corrupt`] with its
    /// index (from 1).
    pub fn steps(&self) -> impl Iterator<Item = Result<RecordedStep, ReplayError>> + '_ {
        self.frames.iter().enumerate().map(|(i, frame)| {
            postcard::from_bytes(frame).map_err(|_| ReplayError::Corrupt { step: i + 1 })
        })
    }
}

/// Replays a recording on a fresh broker and compares every step's actions.
///
/// # Errors
///
/// A [`ReplayError`] when the bytes are not a recording this build can replay.
pub fn replay(bytes: &[u8]) -> Result<ReplayReport, ReplayError> {
    let recording = Recording::read(bytes)?;
    let header = recording.header.clone();
    let mut broker = Broker::new(header.config, header.seed, header.start);
    let mut out = Outbox::new();
    for (i, step) in recording.steps().enumerate() {
        let step = step?;
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
        steps: recording.step_count(),
        truncated: recording.truncated,
    })
}
