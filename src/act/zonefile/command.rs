//! The check and reload commands: an argument list (no shell), `{zone}` and `{path}` filled in, run
//! with a time limit. A command that outlives it is killed with its whole process group, so a shell
//! script's children cannot keep it (or its output pipes) alive.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// How much of a command's output an error message quotes.
const OUTPUT_QUOTED: usize = 2000;

/// Why a command did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// It could not be started (no such program, not executable).
    CannotStart(String),
    /// It exited unsuccessfully; the message quotes its output.
    Exit(String),
    /// It ran longer than allowed and was killed.
    TimedOut(String),
}

/// `argv` with `{zone}` (without its trailing dot, as `rndc` and `knotc` take it) and `{path}`.
pub fn expand(argv: &[String], zone: &str, path: &Path) -> Vec<String> {
    let zone = zone.trim_end_matches('.');
    let path = path.display().to_string();
    argv.iter()
        .map(|a| a.replace("{zone}", zone).replace("{path}", &path))
        .collect()
}

/// Runs `argv` (already expanded) for at most `timeout`.
///
/// # Errors
/// [`Failure`], each message naming the command line.
pub async fn run(argv: &[String], timeout: Duration) -> Result<(), Failure> {
    let shown = argv.join(" ");
    let Some((program, args)) = argv.split_first() else {
        return Err(Failure::CannotStart("empty command".to_owned()));
    };
    let child = crate::subprocess::spawn(
        tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true),
    )
    .map_err(|e| Failure::CannotStart(format!("cannot run `{shown}`: {e}")))?;
    let group = child
        .id()
        .and_then(|id| rustix::process::Pid::from_raw(id as i32));
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let mut text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            let err = String::from_utf8_lossy(&out.stderr);
            if !err.trim().is_empty() {
                if !text.is_empty() {
                    text.push_str(" / ");
                }
                text.push_str(err.trim());
            }
            if text.len() > OUTPUT_QUOTED {
                let cut = (0..=OUTPUT_QUOTED)
                    .rev()
                    .find(|&i| text.is_char_boundary(i))
                    .unwrap_or(0);
                text.truncate(cut);
                text.push('…');
            }
            let text = if text.is_empty() {
                "no output".to_owned()
            } else {
                text
            };
            Err(Failure::Exit(format!(
                "`{shown}` failed ({}): {text}",
                out.status
            )))
        }
        Ok(Err(e)) => Err(Failure::Exit(format!("`{shown}` failed: {e}"))),
        Err(_) => {
            if let Some(pid) = group {
                // The child leads its own group (process_group(0)): this reaches its children too.
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
            Err(Failure::TimedOut(format!(
                "`{shown}` did not finish within {timeout:?} and was killed"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn exit_status_output_and_placeholders() {
        let argv = expand(
            &sh("test \"$0\" = example.test && echo {path}")
                .into_iter()
                .chain(["{zone}".to_owned()])
                .collect::<Vec<_>>(),
            "example.test.",
            Path::new("/tmp/z"),
        );
        assert_eq!(argv[2], "test \"$0\" = example.test && echo /tmp/z");
        assert_eq!(argv[3], "example.test");
        run(&argv, Duration::from_secs(5)).await.unwrap();
        match run(&sh("echo bad zone >&2; exit 3"), Duration::from_secs(5)).await {
            Err(Failure::Exit(m)) => assert!(
                m.contains("exit status: 3") && m.ends_with("bad zone"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            run(&["/nonexistent/reload".to_owned()], Duration::from_secs(5)).await,
            Err(Failure::CannotStart(_))
        ));
    }

    #[tokio::test]
    async fn a_command_past_its_time_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        // The shell starts a child that would hold the output pipe open for a minute.
        let script = format!("sleep 60 & echo $! > {}; wait", pidfile.display());
        let started = tokio::time::Instant::now();
        match run(&sh(&script), Duration::from_millis(300)).await {
            Err(Failure::TimedOut(m)) => assert!(m.contains("was killed"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild is gone (or a zombie about to be reaped by init).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie_or_gone = state.is_empty() || state.split_whitespace().nth(2) == Some("Z");
            if zombie_or_gone {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "sleep {pid} survived: {state}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
