//! The `script` writer: runs a user command for every operation, with the operation as one JSON
//! document on stdin ([`super::plugin`], documented in `docs/writers.md`), and reads the reply from
//! stdout and the outcome from the exit code: 0 done, 1 transient, 2 rejected, 3 authentication,
//! 4 precondition failed; any other code or a signal is transient. The first lines of stderr go into
//! every error message.
//!
//! **Bounded in time and size.** The script runs in its own process group, in the configuration
//! file's directory. After `timeout` the whole group is killed (a child the script started dies with
//! it) and reaped, and the operation is transient; so is the group when the operation itself is
//! dropped (daemon shutdown). A reply larger than [`MAX_REPLY_BYTES`] is an error, and the script is
//! killed rather than buffered. Only the first [`STDERR_KEPT_BYTES`] of stderr are kept.
//!
//! **No shell, no secrets on the command line.** The command is an argv list; secrets go in `env`
//! (values never logged) or in files the script reads, since any local user can read a command line.
//!
//! **Capabilities are the script's promise**: `compare_and_swap = true` only if it checks the
//! precondition atomically with the change, `read_back = false` if its reads lag its writes.

pub mod config;

use std::io;
use std::process::Stdio;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::{Child, Command};

use super::plugin::{self, MAX_REPLY_BYTES, Outcome, Request, excerpt};
use super::{Capabilities, Published, RecordChange, WriteError, Writer};
use crate::subprocess::{GroupGuard, in_own_group, read_head, spawn};
pub use config::{DEFAULT_SCRIPT_TIMEOUT, RawScript, ScriptConfig};

/// How much of a script's stderr is kept for messages, bytes; the rest is read and dropped.
pub const STDERR_KEPT_BYTES: usize = 4096;
/// How many lines of stderr an error message quotes.
const STDERR_LINES: usize = 5;

/// Runs a user command per operation.
#[derive(Debug)]
pub struct ScriptWriter {
    name: String,
    config: ScriptConfig,
}

/// What a run of the script produced.
struct Finished {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Why reading the script's output stopped early.
enum IoFail {
    TooLarge,
    Io(io::Error),
}

impl ScriptWriter {
    /// A writer running `config.program`. Nothing runs until first use.
    pub fn new(name: &str, config: ScriptConfig) -> Self {
        ScriptWriter {
            name: name.to_owned(),
            config,
        }
    }

    /// The command for messages: the program as it will be run.
    fn program(&self) -> String {
        self.config.program.display().to_string()
    }

    /// Runs the script with `request` on stdin; the outcome by exit code, stdout on success.
    async fn call(&self, request: &Request<'_>) -> Result<Vec<u8>, WriteError> {
        let op = request.operation;
        let what = format!(
            "writer {:?}: script {} ({} {})",
            self.name,
            self.program(),
            op.as_str(),
            request.fqdn
        );
        let finished = self.run(&request.to_json(), &what).await?;
        let outcome = Outcome::of_exit(finished.code);
        if outcome == Outcome::Ok {
            return Ok(finished.stdout);
        }
        let how = match finished.code {
            Some(code) => format!("exited with {code}"),
            None => "was killed by a signal".to_owned(),
        };
        Err(plugin::error_for(
            outcome,
            op,
            format!(
                "{what} {how} ({}); stderr: {}",
                outcome.as_str(),
                stderr_head(&finished.stderr)
            ),
        ))
    }

    /// Spawns the script in its own process group, feeds `input`, collects its output, all within the
    /// timeout; the group is killed on timeout, on too much output, or when this future is dropped.
    async fn run(&self, input: &[u8], what: &str) -> Result<Finished, WriteError> {
        let mut child = spawn(
            in_own_group(&mut Command::new(&self.config.program))
                .args(&self.config.args)
                .current_dir(&self.config.dir)
                .envs(&self.config.env)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .map_err(|e| self.spawn_error(&e))?;
        let mut group = GroupGuard::of(&child);
        let timeout = self.config.timeout;
        let result = tokio::time::timeout(timeout, exchange(&mut child, input)).await;
        let failed = match result {
            Ok(Ok(finished)) => {
                group.disarm();
                return Ok(finished);
            }
            Ok(Err(IoFail::TooLarge)) => WriteError::Rejected(format!(
                "{what} printed more than {MAX_REPLY_BYTES} bytes on stdout and was killed; a reply must be smaller"
            )),
            Ok(Err(IoFail::Io(e))) => {
                WriteError::Transient(format!("{what}: cannot talk to the script: {e}"))
            }
            Err(_) => WriteError::Transient(format!(
                "{what} timed out after {} and was killed with its process group; raise `timeout` if it needs longer",
                humantime::format_duration(timeout)
            )),
        };
        group.kill_and_reap(&mut child).await;
        Err(failed)
    }

    fn spawn_error(&self, e: &io::Error) -> WriteError {
        let message = format!(
            "writer {:?}: cannot run {} (working directory {}): {e}",
            self.name,
            self.program(),
            self.config.dir.display()
        );
        match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied => {
                WriteError::Rejected(format!("{message}; fix `command`"))
            }
            // Out of processes or memory: may pass.
            _ => WriteError::Transient(message),
        }
    }
}

/// Writes `input` to the child's stdin and reads stdout (bounded) and stderr (head) to their ends,
/// then waits for the child.
async fn exchange(child: &mut Child, input: &[u8]) -> Result<Finished, IoFail> {
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let write = async {
        if let Some(mut stdin) = stdin {
            // A script that does not read its input (or exits early) closes the pipe: not an error.
            match stdin.write_all(input).await {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
                Err(e) => return Err(IoFail::Io(e)),
            }
        }
        Ok(())
    };
    let out = async {
        match stdout {
            Some(s) => read_bounded(s).await,
            None => Ok(Vec::new()),
        }
    };
    let err = async {
        match stderr {
            Some(s) => read_head(s, STDERR_KEPT_BYTES).await.map_err(IoFail::Io),
            None => Ok(Vec::new()),
        }
    };
    let ((), stdout, stderr) = tokio::try_join!(write, out, err)?;
    let status = child.wait().await.map_err(IoFail::Io)?;
    Ok(Finished {
        code: status.code(),
        stdout,
        stderr,
    })
}

/// Reads `r` to its end, failing once it exceeds [`MAX_REPLY_BYTES`].
async fn read_bounded(r: impl AsyncRead + Unpin) -> Result<Vec<u8>, IoFail> {
    let mut out = Vec::new();
    let limit = MAX_REPLY_BYTES as u64 + 1;
    r.take(limit)
        .read_to_end(&mut out)
        .await
        .map_err(IoFail::Io)?;
    if out.len() > MAX_REPLY_BYTES {
        return Err(IoFail::TooLarge);
    }
    Ok(out)
}

/// The first lines of stderr, quoted, for a message.
fn stderr_head(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let head: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .take(STDERR_LINES)
        .collect();
    excerpt(head.join("\n").as_bytes())
}

#[async_trait]
impl Writer for ScriptWriter {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            compare_and_swap: self.config.compare_and_swap,
            read_back: self.config.read_back,
            ..Capabilities::default()
        }
    }

    async fn read(&self, fqdn: &str, zone: &str) -> Result<Published, WriteError> {
        let stdout = self.call(&Request::read(&self.name, fqdn, zone)).await?;
        plugin::parse_read_reply(&stdout).map_err(|m| {
            WriteError::Rejected(format!(
                "writer {:?}: script {} (read {fqdn}): {m}; print the reply on stdout and anything else on stderr",
                self.name,
                self.program()
            ))
        })
    }

    async fn apply(&self, change: &RecordChange) -> Result<(), WriteError> {
        let stdout = self.call(&Request::apply(&self.name, change)).await?;
        plugin::check_apply_reply(&stdout).map_err(|m| {
            WriteError::Rejected(format!(
                "writer {:?}: script {} (apply {}): {m}; print nothing on stdout (log to stderr)",
                self.name,
                self.program(),
                change.fqdn
            ))
        })
    }
}
