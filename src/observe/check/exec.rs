//! The `exec` check: runs a command per probe, Monitoring Plugins style (Nagios/Icinga/Sensu
//! plug-ins): exit 0 OK, 1 WARNING (up unless `warning_is_down`), 2 CRITICAL, 3 UNKNOWN and anything
//! else (another code, a signal) down. Its options as written ([`RawExecCheck`]), their validation,
//! the validated [`ExecCheckConfig`] and the [`ExecProbe`] built from it.
//!
//! **No shell unless asked.** `command` is an argv list; `{ip}`, `{port}` and `{fqdn}` in any argument
//! but the program are replaced by the endpoint's address, the check's `port` and the service's name
//! (no trailing dot). `shell = true` runs `sh -c` with the arguments joined by spaces instead.
//! The program is resolved like the `script` writer's (a relative path against the configuration
//! file's directory, which is also the working directory; a bare name in `PATH`) when the
//! configuration is loaded.
//!
//! **Bounded.** The command runs in its own process group ([`crate::subprocess`]); at the probe's
//! timeout the whole group is killed and the command reaped, so nothing it started outlives the probe
//! and no zombie is left; so is a group whose leader exited while others still ran. The first line of
//! its output (stdout, else stderr), at most [`DETAIL_CHARS`] characters, goes into the probe detail.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::process::Command;
use tokio::time::Instant;

use crate::act::script::config::{absolute, argv, program};
use crate::config::Seg::{self, Index, Key};
use crate::config::{Errors, with};
use crate::observe::probe::{Probe, ProbeResult, timed_out};
use crate::subprocess::{GroupGuard, in_own_group, read_head};

/// How much of the command's stdout and stderr is kept, bytes; the rest is read and dropped.
pub const OUTPUT_KEPT_BYTES: usize = 4096;
/// Longest first line of output quoted in the probe detail, characters.
pub const DETAIL_CHARS: usize = 200;
/// The placeholders `command` may use.
const PLACEHOLDERS: [&str; 3] = ["ip", "port", "fqdn"];

/// `[service.check]` options of `type = "exec"`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExecCheck {
    /// Program and arguments, `["/usr/lib/nagios/plugins/check_http", "-I", "{ip}"]`.
    #[serde(deserialize_with = "argv")]
    pub command: Vec<String>,
    /// Value of `{port}`.
    pub port: Option<u16>,
    /// Exit code 1 (WARNING) counts as down.
    #[serde(default)]
    pub warning_is_down: bool,
    /// Run `sh -c` with the joined command.
    #[serde(default)]
    pub shell: bool,
}

/// An exec check, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCheckConfig {
    /// The program (resolved) and the argument templates, with `{ip}`, `{port}`, `{fqdn}` unreplaced.
    pub argv: Vec<String>,
    /// Working directory: the configuration file's.
    pub dir: PathBuf,
    /// The service name (no trailing dot), for `{fqdn}`.
    pub fqdn: String,
    /// Value of `{port}`, if set.
    pub port: Option<u16>,
    /// Exit code 1 counts as down.
    pub warning_is_down: bool,
}

impl ExecCheckConfig {
    /// Builds the probe of endpoint `ip`; it cannot fail (spawn problems are failed probes).
    pub fn build(&self, ip: IpAddr, timeout: Duration) -> ExecProbe {
        let port = self.port.map(|p| p.to_string()).unwrap_or_default();
        let argv = self
            .argv
            .iter()
            .map(|a| {
                a.replace("{ip}", &ip.to_string())
                    .replace("{port}", &port)
                    .replace("{fqdn}", &self.fqdn)
            })
            .collect();
        ExecProbe {
            argv,
            dir: self.dir.clone(),
            timeout,
            warning_is_down: self.warning_is_down,
        }
    }
}

/// The `{name}` placeholders in `arg` (lower-case letters and `_` between braces).
fn placeholders(arg: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = arg;
    while let Some(open) = rest.find('{') {
        rest = &rest[open + 1..];
        if let Some(close) = rest.find('}') {
            let name = &rest[..close];
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                found.push(name);
            }
        }
    }
    found
}

/// Validates an exec check of service `label` at key path `cpath`; a relative program is resolved
/// against `base_dir`. Problems go to `errs`, and then `None` is returned.
pub(crate) fn validate(
    e: &RawExecCheck,
    label: &str,
    cpath: &[Seg],
    base_dir: &Path,
    errs: &mut Errors,
) -> Option<ExecCheckConfig> {
    let before = errs.len();
    let base_dir = absolute(base_dir);
    let cmd_path = with(cpath, &[Key("command")]);
    if e.command.is_empty() {
        errs.at(
            &cmd_path,
            format!(
                "service {label:?}: command must name a program, like [\"/usr/lib/nagios/plugins/check_http\", \"-I\", \"{{ip}}\"]"
            ),
        );
        return None;
    }
    for (i, arg) in e.command.iter().enumerate() {
        let at = with(&cmd_path, &[Index(i)]);
        if arg.contains('\0') {
            errs.at(&at, "command arguments cannot hold a NUL character");
        }
        for name in placeholders(arg) {
            if !PLACEHOLDERS.contains(&name) {
                errs.at(
                    &at,
                    format!(
                        "service {label:?}: unknown placeholder {{{name}}}; use {{ip}}, {{port}} or {{fqdn}}"
                    ),
                );
            } else if name == "port" && e.port.is_none() {
                errs.at(
                    &at,
                    format!(
                        "service {label:?}: command uses {{port}} but the check has no port; add port = <number> to [service.check]"
                    ),
                );
            }
        }
    }
    if e.port == Some(0) {
        errs.at(
            &with(cpath, &[Key("port")]),
            format!("service {label:?}: check port must not be 0"),
        );
    }
    let argv = if e.shell {
        vec!["/bin/sh".to_owned(), "-c".to_owned(), e.command.join(" ")]
    } else {
        let first = &e.command[0];
        if !placeholders(first).is_empty() {
            errs.at(
                &with(&cmd_path, &[Index(0)]),
                format!(
                    "service {label:?}: the program cannot hold a placeholder; put {{ip}}, {{port}}, {{fqdn}} in the arguments"
                ),
            );
        }
        match program(first, &Default::default(), &base_dir) {
            Ok(p) => {
                let mut argv = vec![p.to_string_lossy().into_owned()];
                argv.extend(e.command[1..].iter().cloned());
                argv
            }
            Err(m) => {
                errs.at(&with(&cmd_path, &[Index(0)]), m);
                Vec::new()
            }
        }
    };
    if errs.len() != before {
        return None;
    }
    Some(ExecCheckConfig {
        argv,
        dir: base_dir,
        fqdn: label.trim_end_matches('.').to_owned(),
        port: e.port,
        warning_is_down: e.warning_is_down,
    })
}

/// Runs the command once per probe.
#[derive(Debug)]
pub struct ExecProbe {
    argv: Vec<String>,
    dir: PathBuf,
    timeout: Duration,
    warning_is_down: bool,
}

impl ExecProbe {
    /// The command line this probe runs, placeholders replaced.
    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    /// The probe's own deadline: a little before the scheduler's hard timeout, so that the group is
    /// killed and the command reaped here rather than left to a dropped future.
    fn deadline(&self) -> Duration {
        self.timeout - (self.timeout / 10).min(Duration::from_millis(50))
    }
}

/// The first non-empty line of `out`, else of `err`, at most [`DETAIL_CHARS`] characters.
fn first_line(out: &[u8], err: &[u8]) -> String {
    let pick = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(|l| l.chars().take(DETAIL_CHARS).collect::<String>())
    };
    pick(out).or_else(|| pick(err)).unwrap_or_default()
}

/// Monitoring Plugins verdict of `status`: pass or not, and its wording.
fn verdict(status: ExitStatus, warning_is_down: bool) -> (bool, String) {
    use std::os::unix::process::ExitStatusExt as _;
    match status.code() {
        Some(0) => (true, "exit 0 (ok)".to_owned()),
        Some(1) => (!warning_is_down, "exit 1 (warning)".to_owned()),
        Some(2) => (false, "exit 2 (critical)".to_owned()),
        Some(3) => (false, "exit 3 (unknown)".to_owned()),
        Some(c) => (false, format!("exit {c} (not a plug-in status)")),
        None => (
            false,
            format!("killed by signal {}", status.signal().unwrap_or(0)),
        ),
    }
}

#[async_trait]
impl Probe for ExecProbe {
    async fn probe(&self) -> ProbeResult {
        let start = Instant::now();
        let Some((program, args)) = self.argv.split_first() else {
            return ProbeResult {
                ok: false,
                latency: Duration::ZERO,
                detail: "no command to run".to_owned(),
            };
        };
        let spawned = in_own_group(&mut Command::new(program))
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                return ProbeResult {
                    ok: false,
                    latency: start.elapsed(),
                    detail: format!("cannot run {program}: {e}"),
                };
            }
        };
        // Armed until the end: whatever is left in the group when the probe ends is killed.
        let group = GroupGuard::of(&child);
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let run = async {
            let out = async {
                match stdout {
                    Some(s) => read_head(s, OUTPUT_KEPT_BYTES).await.unwrap_or_default(),
                    None => Vec::new(),
                }
            };
            let err = async {
                match stderr {
                    Some(s) => read_head(s, OUTPUT_KEPT_BYTES).await.unwrap_or_default(),
                    None => Vec::new(),
                }
            };
            let (out, err) = tokio::join!(out, err);
            (out, err, child.wait().await)
        };
        match tokio::time::timeout(self.deadline(), run).await {
            Ok((out, err, Ok(status))) => {
                let latency = start.elapsed();
                drop(group);
                let (ok, code) = verdict(status, self.warning_is_down);
                let line = first_line(&out, &err);
                ProbeResult {
                    ok,
                    latency,
                    detail: if line.is_empty() {
                        code
                    } else {
                        format!("{code}: {line}")
                    },
                }
            }
            Ok((_, _, Err(e))) => {
                group.kill_and_reap(&mut child).await;
                ProbeResult {
                    ok: false,
                    latency: start.elapsed(),
                    detail: format!("cannot wait for {program}: {e}"),
                }
            }
            Err(_) => {
                group.kill_and_reap(&mut child).await;
                timed_out(self.timeout)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_found() {
        assert_eq!(placeholders("-H {ip}:{port}"), vec!["ip", "port"]);
        assert_eq!(placeholders("{fqdn}"), vec!["fqdn"]);
        assert_eq!(placeholders("awk '{print $1}' {x"), Vec::<&str>::new());
        assert_eq!(placeholders("{Bad} {host}"), vec!["host"]);
    }

    #[test]
    fn first_line_prefers_stdout_and_is_bounded() {
        assert_eq!(first_line(b"\n  OK - fine \nmore", b"err"), "OK - fine");
        assert_eq!(first_line(b"", b"oops\n"), "oops");
        assert_eq!(first_line(&[b'x'; 1000], b"").len(), DETAIL_CHARS);
    }
}
