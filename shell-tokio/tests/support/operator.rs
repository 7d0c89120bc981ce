//! The operator's commands of a binary, checked the same way for both shells (shell-mio
//! includes this file by path): `check-config`, `--log-format json`, `completions`, `man`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A fresh directory under the system temp dir, removed when dropped.
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Scratch {
    pub(crate) fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("jetmq-kit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `bin check-config FILE`: 0 and the effective configuration (secrets masked) for a valid
/// file, 1 and the key, value and what is allowed for an invalid one.
pub(crate) fn check_config_exits_0_or_1(bin: &Path) {
    let dir = Scratch::new(&format!("check-{}", name_of(bin)));
    let secret = "Zq9-not-for-your-eyes";
    let valid = dir.0.join("valid.toml");
    std::fs::write(
        &valid,
        format!(
            "[limits]\nmax_inflight = 32\n[nats]\nurl = \"nats://127.0.0.1:4222\"\n\
             user = \"jetmq\"\npassword = \"{secret}\"\n"
        ),
    )
    .expect("write");
    let out = Command::new(bin)
        .args(["--listen", "127.0.0.1:1999", "check-config"])
        .arg(&valid)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "max_inflight = 32",
        "max_queued_messages = 100000",
        "listen = [\"127.0.0.1:1999\"]",
        "password = \"***\"",
    ] {
        assert!(stdout.lines().any(|l| l == line), "{line}:\n{stdout}");
    }
    assert!(!stdout.contains(secret), "{stdout}");
    // It checks and prints: it serves nothing, so it needs no free port.
    let invalid = dir.0.join("invalid.toml");
    std::fs::write(&invalid, "[limits]\nmax_inflight = 0\n").expect("write");
    let out = Command::new(bin)
        .arg("check-config")
        .arg(&invalid)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        stderr.contains("limits.max_inflight")
            && stderr.contains("\"0\"")
            && stderr.contains("1 to 65535"),
        "{stderr}"
    );
    let out = Command::new(bin)
        .arg("check-config")
        .arg(dir.0.join("missing.toml"))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

/// `bin --log-format json` logs one JSON object per line, with `level` and `message`.
pub(crate) fn logs_json_lines(bin: &Path) {
    let dir = Scratch::new(&format!("json-{}", name_of(bin)));
    let log = dir.0.join("stderr");
    let mut child = Command::new(bin)
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .arg("--data-dir")
        .arg(dir.0.join("data"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("a log file"))
        .spawn()
        .expect("starts");
    let deadline = Instant::now() + Duration::from_secs(15);
    let said = loop {
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        if said.contains("listening for MQTT") && said.ends_with('\n') {
            break said;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("it never said it listens: {said}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    let mut listening = None;
    for line in said.lines() {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}"));
        assert!(value["level"].is_string(), "{line}");
        assert!(value["message"].is_string(), "{line}");
        if value["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("listening for MQTT"))
        {
            listening = Some(value);
        }
    }
    let listening = listening.expect("the start-up line");
    assert_eq!(listening["level"], "INFO", "{listening}");
    assert!(
        listening["addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "the event's fields at the top level: {listening}"
    );
}

/// `bin completions SHELL` and `bin man` print what clap generates from the command line.
pub(crate) fn prints_completions_and_man_page(bin: &Path) {
    let name = name_of(bin);
    let run = |args: &[&str]| {
        let out = Command::new(bin).args(args).output().expect("runs");
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).expect("utf-8")
    };
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let script = run(&["completions", shell]);
        assert!(script.contains(&name), "{shell}: {script}");
        assert!(script.contains("check-config"), "{shell}: {script}");
        assert!(script.contains("log-format"), "{shell}: {script}");
    }
    let man = run(&["man"]);
    assert!(man.contains(".TH"), "{man}");
    assert!(man.contains(&name.replace('-', "\\-")), "{man}");
    assert!(man.contains("check\\-config"), "{man}");
    assert!(man.contains("\\-\\-log\\-format"), "{man}");
    let out = Command::new(bin)
        .args(["completions", "tcsh"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

fn name_of(bin: &Path) -> String {
    bin.file_stem()
        .expect("a binary")
        .to_string_lossy()
        .into_owned()
}
