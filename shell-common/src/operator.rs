//! The commands every binary has for its operator, shared so that `jetmq` and `jetmq-mio`
//! behave alike: `check-config FILE` (the effective configuration, or what is wrong),
//! `completions SHELL` and `man` (generated from the binary's own command-line definition by
//! clap's generators).

use std::io::Write;
use std::path::PathBuf;

use crate::command_line::CommandLine;
use crate::config::ServerConfig;

/// The operator's commands (flattened into each binary's subcommands).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum OperatorCommand {
    /// Check a configuration file exactly as the server would load it (with the other
    /// command-line options given, such as --listen or --nats) and print the effective
    /// configuration: every setting with its value, defaults included, secrets masked.
    /// Exits 0 when the server would start with it, 1 (naming the key, the value and what is
    /// allowed) when not.
    CheckConfig {
        /// The TOML configuration file (in place of --config).
        file: PathBuf,
    },
    /// Print the completion script of SHELL for this binary.
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print this binary's man page (roff), for example: jetmq man > jetmq.1
    Man,
}

impl OperatorCommand {
    /// Runs the command for the binary whose command line `command` defines (its name names
    /// the binary), with the serving options `serve` it was given; writes its result to `out`
    /// and what went wrong to `err`. The exit status: 0, or 1 when the configuration is
    /// invalid or the output cannot be written.
    pub fn run(
        &self,
        mut command: clap::Command,
        serve: &CommandLine,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> u8 {
        let name = command.get_name().to_owned();
        let written = match self {
            Self::CheckConfig { file } => {
                let mut cli = serve.clone();
                cli.config = Some(file.clone());
                match ServerConfig::load(&cli) {
                    Ok(config) => out.write_all(crate::effective::render(&config, &cli).as_bytes()),
                    Err(e) => {
                        let _ = writeln!(err, "{name}: {}: {e}", file.display());
                        return 1;
                    }
                }
            }
            Self::Completions { shell } => {
                clap_complete::generate(*shell, &mut command, name.clone(), out);
                Ok(())
            }
            Self::Man => clap_mangen::Man::new(command).render(out),
        };
        match written.and_then(|()| out.flush()) {
            Ok(()) => 0,
            Err(e) => {
                let _ = writeln!(err, "{name}: cannot write the output: {e}");
                1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory as _, Parser};

    /// A binary's command line as the binaries define theirs.
    #[derive(Debug, Parser)]
    #[command(name = "jetmq-test")]
    struct Cli {
        #[command(flatten)]
        serve: CommandLine,
        #[command(subcommand)]
        command: Option<OperatorCommand>,
    }

    fn run(args: &[&str]) -> (u8, String, String) {
        let cli = Cli::try_parse_from(std::iter::once("jetmq-test").chain(args.iter().copied()))
            .expect("parses");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code =
            cli.command
                .expect("a command")
                .run(Cli::command(), &cli.serve, &mut out, &mut err);
        let text = |b: Vec<u8>| String::from_utf8(b).expect("utf-8");
        (code, text(out), text(err))
    }

    #[test]
    fn completions_and_the_man_page_come_from_the_command_line() {
        for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
            let (code, out, _) = run(&["completions", shell]);
            assert_eq!(code, 0);
            assert!(out.contains("check-config"), "{shell}: {out}");
            assert!(out.contains("log-format"), "{shell}: {out}");
        }
        let (code, man, _) = run(&["man"]);
        assert_eq!(code, 0);
        assert!(man.starts_with(".ie") || man.starts_with(".TH"), "{man}");
        assert!(man.contains("jetmq\\-test"), "{man}");
        assert!(man.contains("check\\-config"), "{man}");
    }

    #[test]
    fn check_config_layers_the_command_line_over_the_file() {
        let dir = std::env::temp_dir().join(format!("jetmq-operator-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("jetmq.toml");
        std::fs::write(
            &file,
            "listen = [\"127.0.0.1:1999\"]\n[limits]\nmax_qos = 1\n",
        )
        .expect("write");
        let path = file.display().to_string();
        let (code, out, err) = run(&["--listen", "127.0.0.1:2000", "check-config", &path]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("\nlisten = [\"127.0.0.1:2000\"]\n"), "{out}");
        assert!(out.contains("\nmax_qos = 1\n"), "{out}");
        std::fs::write(&file, "[limits]\nmax_qos = 3\n").expect("write");
        let (code, out, err) = run(&["check-config", &path]);
        assert_eq!(code, 1);
        assert!(out.is_empty(), "{out}");
        assert!(
            err.contains("limits.max_qos") && err.contains("\"3\"") && err.contains("0, 1 or 2"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
