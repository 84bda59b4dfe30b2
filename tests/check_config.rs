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

/// Every option of every section appears in etc/rrguard.example.toml. The option lists come from
/// serde itself: a bogus key in each section makes the parser name every field it accepts.
#[test]
fn example_config_documents_every_option() {
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/rrguard.example.toml"),
    )
    .unwrap();
    let writer = "[[writer]]\nname = \"w\"\ntype = \"rfc2136\"\nserver = \"127.0.0.1\"\ntsig = { name = \"k\", algorithm = \"hmac-sha256\", secret = \"c2VjcmV0\" BOGUS_TSIG }\nBOGUS_WRITER\n";
    let service = |check: &str| {
        format!(
            "[[service]]\nfqdn = \"a.example\"\nzone = \"example\"\nwriter = \"w\"\nendpoints = [\"192.0.2.1\"]\nBOGUS_SERVICE\n[service.check]\ntype = \"{check}\"\nport = 1\nBOGUS_CHECK\n"
        )
    };
    let serve = "[[writer]]\nname = \"d\"\ntype = \"serve\"\nlisten = [\"127.0.0.1:53\"]\nBOGUS_SERVE\n[[writer.zone]]\nname = \"example\"\nns = [\"ns1.example\"]\nBOGUS_ZONE\n";
    let cluster = "[cluster]\nsecret = \"0123456789abcdef\"\nBOGUS_CLUSTER\n[[cluster.peers]]\nid = \"b\"\nurl = \"http://127.0.0.1:1\"\nBOGUS_PEER\n";
    let zonefile = "[[writer]]\nname = \"z\"\ntype = \"zonefile\"\npath = \"/tmp/z.zone\"\nzone = \"example\"\nns = [\"ns1.example\"]\nzzz_bogus = 1\n";
    let hosts = "[[writer]]\nname = \"h\"\ntype = \"hosts\"\nzzz_bogus = 1\n";
    let sections: Vec<(&str, String)> = vec![
        ("[node]", "[node]\nzzz_bogus = 1\n".to_owned()),
        ("zonefile [[writer]]", zonefile.to_owned()),
        ("hosts [[writer]]", hosts.to_owned()),
        ("[defaults]", "[defaults]\nzzz_bogus = 1\n".to_owned()),
        (
            "tsig",
            writer
                .replace(" BOGUS_TSIG", ", zzz_bogus = 1")
                .replace("BOGUS_WRITER", ""),
        ),
        (
            "[[writer]]",
            writer
                .replace(" BOGUS_TSIG", "")
                .replace("BOGUS_WRITER", "zzz_bogus = 1"),
        ),
        (
            "serve [[writer]]",
            serve
                .replace("BOGUS_SERVE", "zzz_bogus = 1")
                .replace("BOGUS_ZONE", ""),
        ),
        (
            "[[writer.zone]]",
            serve
                .replace("BOGUS_SERVE", "")
                .replace("BOGUS_ZONE", "zzz_bogus = 1"),
        ),
        (
            "script writer",
            "[[writer]]\nname = \"w\"\ntype = \"script\"\ncommand = [\"sh\"]\nzzz_bogus = 1\n"
                .to_owned(),
        ),
        (
            "webhook writer",
            "[[writer]]\nname = \"w\"\ntype = \"webhook\"\nurl = \"https://h/\"\nzzz_bogus = 1\n"
                .to_owned(),
        ),
        (
            "route53 writer",
            "[[writer]]\nname = \"w\"\ntype = \"route53\"\nhosted_zone_id = \"Z1\"\nzzz_bogus = 1\n"
                .to_owned(),
        ),
        (
            "cloudflare writer",
            "[[writer]]\nname = \"w\"\ntype = \"cloudflare\"\nzone_id = \"z\"\nzzz_bogus = 1\n"
                .to_owned(),
        ),
        (
            "digitalocean writer",
            "[[writer]]\nname = \"w\"\ntype = \"digitalocean\"\nzzz_bogus = 1\n".to_owned(),
        ),
        (
            "dynu writer",
            "[[writer]]\nname = \"w\"\ntype = \"dynu\"\nzzz_bogus = 1\n".to_owned(),
        ),
        (
            "[[service]]",
            service("tcp")
                .replace("BOGUS_SERVICE", "zzz_bogus = 1")
                .replace("BOGUS_CHECK", ""),
        ),
        (
            "[service.damping]",
            service("tcp")
                .replace("BOGUS_SERVICE", "[service.damping]\nzzz_bogus = 1")
                .replace("BOGUS_CHECK", ""),
        ),
        (
            "[service.select]",
            service("tcp")
                .replace("BOGUS_SERVICE", "[service.select]\nzzz_bogus = 1")
                .replace("BOGUS_CHECK", ""),
        ),
        (
            "[service.self_register]",
            service("tcp")
                .replace(
                    "BOGUS_SERVICE",
                    "[service.self_register]\naddress = \"interface:lo\"\nzzz_bogus = 1",
                )
                .replace("BOGUS_CHECK", ""),
        ),
        (
            "tcp check",
            service("tcp")
                .replace("BOGUS_SERVICE", "")
                .replace("BOGUS_CHECK", "zzz_bogus = 1"),
        ),
        (
            "http check",
            service("https")
                .replace("BOGUS_SERVICE", "")
                .replace("BOGUS_CHECK", "zzz_bogus = 1"),
        ),
        (
            "exec check",
            service("exec")
                .replace("BOGUS_SERVICE", "")
                .replace("BOGUS_CHECK", "zzz_bogus = 1"),
        ),
        (
            "dns check",
            service("dns")
                .replace("BOGUS_SERVICE", "")
                .replace("BOGUS_CHECK", "name = \"a.example\"\nzzz_bogus = 1"),
        ),
        (
            "icmp check",
            service("icmp")
                .replace("BOGUS_SERVICE", "")
                .replace("BOGUS_CHECK", "zzz_bogus = 1"),
        ),
        (
            "[naming]",
            format!("{writer}[naming]\nwriter = \"w\"\nzone = \"example\"\nzzz_bogus = 1\n")
                .replace(" BOGUS_TSIG", "")
                .replace("BOGUS_WRITER", ""),
        ),
        (
            "[[alert]]",
            "[[alert]]\nname = \"a\"\ntype = \"webhook\"\nzzz_bogus = 1\n".to_owned(),
        ),
        ("[metrics]", "[metrics]\nzzz_bogus = 1\n".to_owned()),
        (
            "[cluster]",
            cluster
                .replace("BOGUS_CLUSTER", "zzz_bogus = 1")
                .replace("BOGUS_PEER", ""),
        ),
        (
            "[[cluster.peers]]",
            cluster
                .replace("BOGUS_CLUSTER", "")
                .replace("BOGUS_PEER", "zzz_bogus = 1"),
        ),
    ];
    let mut missing = Vec::new();
    for (section, text) in sections {
        let err = match rrguard::config::parse(Path::new("x.toml"), &text) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{section}: bogus key accepted"),
        };
        // The first problem's list (a table with several unknown keys has a line for each).
        let list = err
            .lines()
            .find(|l| l.contains("expected"))
            .unwrap_or(&err)
            .split_once("expected")
            .unwrap_or_else(|| panic!("{section}: no field list in {err}"))
            .1;
        let fields: Vec<&str> = list.split('`').skip(1).step_by(2).collect();
        assert!(fields.len() >= 2, "{section}: {err}");
        for f in fields {
            // Documented as `f = …` (possibly commented out), as a key inside an inline table, or as a
            // table header like `[service.check]`.
            let documented = example.lines().any(|l| {
                let l = l.trim_start_matches(['#', ' ']);
                l.starts_with(&format!("{f} ="))
                    || l.contains(&format!(" {f} ="))
                    || l.contains(&format!(".{f}]"))
            });
            if !documented {
                missing.push(format!("{section}: {f}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "etc/rrguard.example.toml does not document: {missing:?}"
    );
}

/// Weights on a writer without weighted records are valid: exit 0, and one warning at the
/// `weights` key naming the service, the writer and its type.
#[test]
fn weights_on_a_plain_writer_warn_without_failing() {
    let out = Command::new(env!("CARGO_BIN_EXE_rrguard"))
        .args(["check-config", "-c", "tests/configs/weights_ignored.toml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning:")).collect();
    assert_eq!(
        warnings,
        vec![
            "tests/configs/weights_ignored.toml:17:11: warning: service \"a.example.test.\": weights ignored: writer \"primary\" (rfc2136) has no weighted records; it publishes plain records"
        ]
    );
}

/// A wrong value of any type, in any kind of option, is worded for an operator: no Rust or serde
/// type name (`usize`, `u32`, `i128`, `f64`, `struct RawTsig`, `untagged enum RawQuorum`), and the
/// advice to drop quotes only where what they hold would be accepted without them.
#[test]
fn wrong_values_are_worded_without_type_names() {
    let writer = "[[writer]]\nname = \"w\"\ntype = \"rfc2136\"\nserver = \"127.0.0.1\"\nTSIG\n";
    let service = |extra: &str, check: &str| {
        format!(
            "[[service]]\nfqdn = \"a.example\"\nzone = \"example\"\nwriter = \"w\"\nendpoints = [\"192.0.2.1\"]\n{extra}\n[service.check]\n{check}\n"
        )
    };
    let tsig = "tsig = { name = \"k\", algorithm = \"hmac-sha256\", secret = \"c2VjcmV0\" }";
    let tcp = "type = \"tcp\"\nport = 80";
    let plain = |before: &str, extra: &str, check: &str| {
        format!(
            "{before}\n{}{}",
            writer.replace("TSIG", tsig),
            service(extra, check)
        )
    };
    // Each place holds `V`: usize, u64, u32, u16, i64, f64, bool, list, table and untagged options.
    let places: Vec<String> = vec![
        plain("[node]\nmax_probes_in_flight = V", "", tcp),
        plain("[node]\naudit_max_size_mib = V", "", tcp),
        plain("[defaults]\nfall = V", "", tcp),
        plain("[defaults]\nttl = V", "", tcp),
        plain("[defaults]\nmin_healthy = V", "", tcp),
        plain("[defaults]\nadaptive_fall = V", "", tcp),
        plain("", "max_remove_fraction = V", tcp),
        plain("", "max_changes = V", tcp),
        plain("", "quorum = V", tcp),
        plain("", "damping = V", tcp),
        plain("", "writers = V", tcp),
        plain("", "", "type = \"tcp\"\nport = V"),
        plain("", "", "type = \"http\"\nport = 80\nfollow_redirects = V"),
        plain("", "", "type = \"http\"\nport = 80\nexpect_status = [V]"),
        plain("", "", "type = \"icmp\"\ncount = V"),
        plain("", "", "type = \"dns\"\nexpect_rcode = V"),
        format!("{}{}", writer.replace("TSIG", "tsig = V"), service("", tcp)),
    ];
    let values = [
        "-1",
        "4294967296",
        "99999999999999999999",
        "\"many\"",
        "\"7\"",
        "\"-1\"",
        "3.5",
        "\"0.5\"",
        "true",
        "\"yes\"",
        "[1]",
        "{ a = 1 }",
    ];
    let type_names = [
        "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize",
        "f32", "f64",
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (i, place) in places.iter().enumerate() {
        for value in values {
            let path = dir.path().join(format!("c{i}.toml"));
            std::fs::write(&path, place.replace(" V", &format!(" {value}"))).unwrap();
            let (_, _, stderr) = check_config(path.to_str().unwrap());
            let words: Vec<&str> = stderr
                .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .collect();
            let leaked = type_names
                .iter()
                .find(|t| words.contains(t))
                .copied()
                .or_else(|| {
                    ["untagged", "struct ", "Raw", "any value", "sequence"]
                        .into_iter()
                        .find(|w| stderr.contains(w))
                });
            if let Some(word) = leaked {
                failures.push(format!("{value} in place {i}: {word:?} in {stderr}"));
            }
            // "without quotes" only for a quoted number or boolean.
            if stderr.contains("without quotes") {
                let quoted = value.trim_matches('"');
                let accepted = quoted.parse::<f64>().is_ok()
                    || ["true", "false", "yes", "no", "on", "off"].contains(&quoted);
                if !value.starts_with('"') || !accepted {
                    failures.push(format!("{value} in place {i}: wrong advice: {stderr}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
