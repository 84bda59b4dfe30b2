//! The quickstart's `start-endpoint` helper, as `scripts/quickstart` writes it: started once it
//! serves, and an honest failure (exit 1, the reason) when the address is still in use.

use std::path::Path;
use std::process::Command;

/// Writes `start-endpoint` into `dir` exactly as `scripts/quickstart` does (the same here-document,
/// with the same variables), for the demo HTTP port `port`.
fn write_start_endpoint(dir: &Path, port: u16) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/quickstart");
    let out = Command::new("bash")
        .arg("-c")
        .arg(
            r#"set -euo pipefail
dir=$1; http_port=$2; pids_file=$dir/pids
mkdir -p "$dir/www"; echo ok >"$dir/www/health"; : >"$pids_file"
eval "$(sed -n '/^cat >"\$dir\/start-endpoint" <<EOF$/,/^EOF$/p' "$3")"
chmod +x "$dir/start-endpoint""#,
        )
        .args(["bash", &dir.display().to_string(), &port.to_string()])
        .arg(&script)
        .output()
        .expect("bash");
    assert!(
        out.status.success() && dir.join("start-endpoint").exists(),
        "cannot extract start-endpoint from {}: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Stops every server the helper started.
struct Started<'a>(&'a Path);

impl Drop for Started<'_> {
    fn drop(&mut self) {
        for pid in std::fs::read_to_string(self.0.join("pids"))
            .unwrap_or_default()
            .lines()
        {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

#[test]
fn start_endpoint_reports_an_address_still_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    write_start_endpoint(dir.path(), port);
    let _cleanup = Started(dir.path());
    let run = || {
        Command::new(dir.path().join("start-endpoint"))
            .arg("127.0.0.3")
            .output()
            .expect("start-endpoint")
    };
    let first = run();
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(stdout.contains("endpoint 127.0.0.3 started"), "{stdout}");
    let reply = std::net::TcpStream::connect(("127.0.0.3", port));
    assert!(
        reply.is_ok(),
        "the endpoint it claims to have started does not answer"
    );

    // Again while the first still serves: the new server cannot bind, and the helper says so.
    let second = run();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(
        !String::from_utf8_lossy(&second.stdout).contains("started"),
        "{}",
        String::from_utf8_lossy(&second.stdout)
    );
    assert!(
        stderr.contains("did not start") && stderr.contains("Address already in use"),
        "{stderr}"
    );
}
