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
//! and no zombie is left; so is a group whose leader exited while others still ran. The verdict is
//! the command's exit status as soon as it exits, even if a process it left in the background still
//! holds its output open (read for at most [`OUTPUT_AFTER_EXIT`] more). The first line of
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
use crate::subprocess::{GroupGuard, in_own_group, read_head_into, spawn};

/// How much of the command's stdout and stderr is kept, bytes; the rest is read and dropped.
pub const OUTPUT_KEPT_BYTES: usize = 4096;
/// Longest first line of output quoted in the probe detail, characters.
pub const DETAIL_CHARS: usize = 200;
/// How long output is still read after the command exited: what it wrote is in the pipes by then,
/// and a process it left running in the background (killed with its group when the probe ends)
/// must not hold the verdict back by keeping them open.
pub const OUTPUT_AFTER_EXIT: Duration = Duration::from_millis(50);
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

/// The `{name}` placeholders in `arg`: a letter, then letters, digits, `_` or `-`, between braces,
/// in any case (so that `{IP}` and `{ip-addr}` are caught as misspellings rather than passed on
/// as written). Not `${name}` (a shell variable) or `%{name}` (curl's `--write-out`), nor braces
/// around anything else (`{print $1}`, `{3}`, JSON).
fn placeholders(arg: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(open) = arg[at..].find('{').map(|o| at + o) {
        at = open + 1;
        let Some(close) = arg[at..].find('}').map(|c| at + c) else {
            break;
        };
        let name = &arg[at..close];
        // `${HOME}` (shell), `%{http_code}` (curl's --write-out).
        let shell_variable = arg[..open].ends_with(['$', '%']);
        if !shell_variable
            && name.starts_with(|c: char| c.is_ascii_alphabetic())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            found.push(name);
        }
    }
    found
}

/// Parses `script` with `/bin/sh -n` (nothing runs); the shell's complaint if it does not parse.
/// `None` too when no shell can be started here: the probe will say so.
fn shell_syntax_error(script: &str) -> Option<String> {
    let out = std::process::Command::new("/bin/sh")
        .args(["-n", "-c", script])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    (!out.status.success()).then(|| {
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        line.trim().to_owned()
    })
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
        let script = e.command.join(" ");
        if script.trim().is_empty() {
            errs.at(
                &cmd_path,
                format!(
                    "service {label:?}: command is empty; with shell = true write the shell command, like [\"check_http -I {{ip}} | grep -q OK\"]"
                ),
            );
        } else if let Some(why) = shell_syntax_error(&script) {
            errs.at(
                &cmd_path,
                format!(
                    "service {label:?}: command is not a valid sh command line (shell = true joins its elements with spaces): {why}"
                ),
            );
        }
        vec!["/bin/sh".to_owned(), "-c".to_owned(), script]
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
                errs.at(
                    &with(&cmd_path, &[Index(0)]),
                    format!("service {label:?}: {m}"),
                );
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
    // Control characters (ESC, BEL, a lone CR) are shown escaped: the detail goes to logs,
    // terminals and the dashboard as written.
    let pick = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(|l| {
                l.chars()
                    .take(DETAIL_CHARS)
                    .flat_map(|c| {
                        let escaped: Vec<char> = if c.is_control() {
                            c.escape_default().collect()
                        } else {
                            vec![c]
                        };
                        escaped
                    })
                    .collect::<String>()
            })
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
        let spawned = spawn(
            in_own_group(&mut Command::new(program))
                .args(args)
                .current_dir(&self.dir)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
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
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let run = async {
            let mut reading = std::pin::pin!(async {
                let out = async {
                    if let Some(s) = stdout {
                        let _ = read_head_into(s, &mut out, OUTPUT_KEPT_BYTES).await;
                    }
                };
                let err = async {
                    if let Some(s) = stderr {
                        let _ = read_head_into(s, &mut err, OUTPUT_KEPT_BYTES).await;
                    }
                };
                tokio::join!(out, err);
            });
            // The verdict is the exit status: a process the command left running in the
            // background may keep its output open long after (killed with the group below).
            let mut read_all = false;
            let status = tokio::select! {
                status = child.wait() => status,
                () = &mut reading => {
                    read_all = true;
                    child.wait().await
                }
            };
            let latency = start.elapsed();
            if !read_all {
                // What the command wrote before it exited is in the pipes already.
                let _ = tokio::time::timeout(OUTPUT_AFTER_EXIT, &mut reading).await;
            }
            (latency, status)
        };
        match tokio::time::timeout(self.deadline(), run).await {
            Ok((latency, Ok(status))) => {
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
            Ok((_, Err(e))) => {
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
        assert_eq!(placeholders("{Bad} {host}"), vec!["Bad", "host"]);
        assert_eq!(placeholders("{IP} {ip-addr}"), vec!["IP", "ip-addr"]);
        assert_eq!(
            placeholders("${HOME} -w '%{http_code}' {3} {\"a\":1} {}"),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn first_line_prefers_stdout_and_is_bounded() {
        assert_eq!(first_line(b"\n  OK - fine \nmore", b"err"), "OK - fine");
        assert_eq!(first_line(b"", b"oops\n"), "oops");
        assert_eq!(first_line(&[b'x'; 1000], b"").len(), DETAIL_CHARS);
        assert_eq!(
            first_line(b"\x1b[31mRED\x07 done\rmore\n", b""),
            "\\u{1b}[31mRED\\u{7} done\\rmore"
        );
    }
}
