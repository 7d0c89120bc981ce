//! Recording a broker's inputs for `jetmq replay`: every input with its time and a digest of
//! the actions it caused, written as the shell feeds the broker; and `jetmq replay` itself.

use std::io;

use jetmq_core::broker::{Broker, Input, Outbox};
use jetmq_core::time::Now;
use tracing::{info, warn};

/// Writes every broker input with its time and the digest of its actions, for `jetmq replay`.
pub struct Recorder {
    file: std::io::BufWriter<std::fs::File>,
    buf: Vec<u8>,
}

impl Recorder {
    /// Creates the recording at `path` for a broker made with `seed`, `config` at `start`.
    /// A recording holds every input, passwords and payloads included, so on Unix the file is
    /// readable and writable by its owner only (mode 0600, also when it existed before).
    ///
    /// # Errors
    ///
    /// The file cannot be created or written.
    pub fn create(
        path: &std::path::Path,
        seed: u64,
        config: &jetmq_core::broker::BrokerConfig,
        start: Now,
    ) -> io::Result<Self> {
        let failed = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("cannot create the recording {}: {e}", path.display()),
            )
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(path).map_err(failed)?;
        // An existing file keeps its mode through open: narrow it before writing anything.
        #[cfg(unix)]
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(failed)?;
        let mut recorder = Self {
            file: std::io::BufWriter::new(file),
            buf: Vec::new(),
        };
        let header = jetmq_core::replay::RecordHeader {
            seed,
            config: config.clone(),
            start,
        };
        jetmq_core::replay::encode_header(&header, &mut recorder.buf);
        recorder.write()?;
        info!(
            path = %path.display(),
            build = %jetmq_core::replay::Build::current(),
            "recording every broker input (replay it with this build)"
        );
        Ok(recorder)
    }

    fn write(&mut self) -> io::Result<()> {
        use std::io::Write;
        self.file.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        use std::io::Write;
        let _ = self.file.flush();
    }
}

/// Hands one input to the broker, recording it first when a recording is on. A failing
/// recording is stopped with a warning; serving goes on.
pub fn handle(
    broker: &mut Broker,
    recorder: &mut Option<Recorder>,
    now: Now,
    input: Input,
    out: &mut Outbox,
) {
    let Some(rec) = recorder.as_mut() else {
        broker.handle(now, input, out);
        return;
    };
    let encoded = jetmq_core::replay::encode_input(&input);
    let before = out.len();
    broker.handle(now, input, out);
    let digest = jetmq_core::replay::actions_digest(&out.actions()[before..]);
    jetmq_core::replay::encode_step(now, &encoded, digest, &mut rec.buf);
    if let Err(e) = rec.write() {
        warn!(error = %e, "recording stopped: cannot write to it");
        *recorder = None;
    }
}

/// What `jetmq replay FILE` does: replays the recording at `path` on the core, writing the
/// report to `out` or why it cannot be replayed (a recording of another build names that
/// build) to `err`. Returns the exit status: 0 when every step is identical, 1 when a step
/// differs, 2 when the file cannot be read or replayed by this build.
pub fn replay_file(path: &std::path::Path, out: &mut dyn io::Write, err: &mut dyn io::Write) -> u8 {
    use jetmq_core::replay::ReplayReport;
    // The report is the command's output: a closed stdout or stderr has no one to tell.
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            let _ = writeln!(err, "jetmq: cannot read {}: {e}", path.display());
            return 2;
        }
    };
    match jetmq_core::replay::replay(&bytes) {
        Ok(ReplayReport::Identical { steps, truncated }) => {
            let _ = writeln!(out, "all {steps} steps identical");
            if truncated {
                let _ = writeln!(
                    out,
                    "(the recording ends in a cut-off step, as when the recorder was killed)"
                );
            }
            0
        }
        Ok(ReplayReport::Differs {
            step,
            input,
            expected,
            actual,
            actions,
        }) => {
            let _ = writeln!(
                out,
                "step {step} differs: recorded digest {expected:016x}, replay gave {actual:016x}"
            );
            let _ = writeln!(out, "input: {input}");
            let _ = writeln!(out, "actions: {actions}");
            1
        }
        Err(e) => {
            let _ = writeln!(err, "jetmq: {}: {e}", path.display());
            2
        }
    }
}
