//! Golden tests of `rrguard check-config`: every broken config in tests/configs/bad/ must exit 64 and print
//! exactly the `FILE:LINE:COL: message` lines of its `.expected` file; the example config must pass.

use std::path::Path;
use std::process::Command;

fn check_config(path: &str) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rrguard"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["check-config", "-c", path])
        .env_remove("RRGUARD_CONFIG")
        .output()
        .expect("run rrguard");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn broken_configs_print_expected_locations() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/configs/bad");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 10,
        "expected a real set of golden cases, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let rel = format!(
            "tests/configs/bad/{}",
            case.file_name().unwrap().to_string_lossy()
        );
        let expected = std::fs::read_to_string(case.with_extension("expected"))
            .expect("golden .expected file");
        let (code, stdout, stderr) = check_config(&rel);
        if code != Some(64) || stderr != expected || !stdout.is_empty() {
            failures.push(format!(
                "{rel}: exit {code:?}\n--- expected\n{expected}--- got\n{stderr}{stdout}"
            ));
        }
        // Every line names the file and a real position.
        for line in stderr.lines() {
            let mut parts = line.splitn(4, ':');
            assert_eq!(parts.next(), Some(rel.as_str()), "{line}");
            let l: usize = parts.next().unwrap().parse().expect("line number");
            let c: usize = parts.next().unwrap().parse().expect("column number");
            assert!(l >= 1 && c >= 1, "{line}");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn example_config_is_valid() {
    let (code, stdout, stderr) = check_config("etc/rrguard.example.toml");
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stdout.trim(),
        "etc/rrguard.example.toml: ok (1 writers, 2 services, 5 endpoints)"
    );
}

#[test]
fn missing_file_is_a_usage_error() {
    let (code, _, stderr) = check_config("tests/configs/nope.toml");
    assert_eq!(code, Some(64));
    assert!(
        stderr.contains("tests/configs/nope.toml: cannot read configuration"),
        "{stderr}"
    );
}

#[test]
fn bad_usage_exits_64() {
    let out = Command::new(env!("CARGO_BIN_EXE_rrguard"))
        .arg("frobnicate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let out = Command::new(env!("CARGO_BIN_EXE_rrguard"))
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["run", "check-config", "plan", "Examples:", "SIGHUP"] {
        assert!(help.contains(word), "--help lacks {word}: {help}");
    }
}
