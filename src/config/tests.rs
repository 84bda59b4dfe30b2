use std::path::Path;
use std::time::Duration;

use super::*;

const WRITER: &str = r#"
[[writer]]
name = "primary"
type = "rfc2136"
servers = ["127.0.0.1", "[::1]:5353"]
tsig = { name = "Upd-Key", algorithm = "hmac-sha512", secret = "c2VjcmV0" }
"#;

fn parse_ok(text: &str) -> Config {
    match parse(Path::new("t.toml"), text) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

fn problems(text: &str) -> Vec<Problem> {
    match parse(Path::new("t.toml"), text) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        other => panic!("expected problems, got {other:?}"),
    }
}

#[test]
fn services_inherit_defaults_and_override_them() {
    let c = parse_ok(&format!(
        r#"
[defaults]
interval = "250ms"
fall = 5
min_healthy = 3
all_down = "fail_closed"
{WRITER}
[[service]]
fqdn = "WWW.Example.Test."
zone = "example.test"
writer = "primary"
endpoints = ["127.0.0.2", "::1"]
rise = 4
[service.check]
type = "https"
"#
    ));
    let s = &c.services[0];
    assert_eq!(s.fqdn, "www.example.test.");
    assert_eq!(s.zone, "example.test.");
    assert_eq!(s.interval, Duration::from_millis(250));
    assert_eq!(s.timeout, DEFAULT_TIMEOUT);
    assert_eq!((s.fall, s.rise), (5, 4));
    // The inherited min_healthy is clamped to the endpoint count.
    assert_eq!(s.min_healthy, 2);
    assert_eq!(s.all_down, AllDownPolicy::FailClosed);
    assert_eq!(s.ttl, DEFAULT_TTL);
    let CheckConfig::Http(h) = &s.check else {
        panic!()
    };
    assert!(h.tls && h.tls_verify);
    assert_eq!(h.port, 443);
    assert_eq!(h.host, "www.example.test");
    assert_eq!(h.expect_status, vec![DEFAULT_HTTP_STATUS]);
    assert_eq!(c.reconcile_interval, DEFAULT_RECONCILE_INTERVAL);
    let WriterKind::Rfc2136(w) = &c.writers[0].kind else {
        panic!("not rfc2136")
    };
    assert_eq!(
        w.servers,
        vec![
            "127.0.0.1:53".parse().unwrap(),
            "[::1]:5353".parse().unwrap()
        ]
    );
    assert_eq!(w.tsig.name, "upd-key.");
    assert_eq!(w.tsig.algorithm, TsigAlgorithm::HmacSha512);
    assert_eq!(w.tsig.secret, b"secret");
    assert!(
        !format!("{:?}", w.tsig).contains("secret\""),
        "secret must not be printed"
    );
}

#[test]
fn secret_file_accepts_bare_bind_and_knot_formats() {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in [
        ("bare", "c2VjcmV0\n"),
        (
            "bind",
            "key \"k\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0\";\n};\n",
        ),
        (
            "knot",
            "key:\n  - id: k\n    algorithm: hmac-sha256\n    secret: c2VjcmV0\n",
        ),
    ] {
        std::fs::write(dir.path().join(name), content).unwrap();
        let text = format!(
            "[[writer]]\nname = \"w\"\ntype = \"rfc2136\"\nserver = \"127.0.0.1\"\ntsig = {{ name = \"k\", algorithm = \"hmac-sha256\", secret_file = \"{name}\" }}\n\n[[service]]\nfqdn = \"www.example.test\"\nzone = \"example.test\"\nwriter = \"w\"\nendpoints = [\"127.0.0.2\"]\n[service.check]\ntype = \"tcp\"\nport = 80\n"
        );
        let c = match parse(&dir.path().join("rrguard.toml"), &text) {
            Ok(c) => c,
            Err(e) => panic!("{name}: {e}"),
        };
        let WriterKind::Rfc2136(w) = &c.writers[0].kind else {
            panic!("not rfc2136")
        };
        assert_eq!(w.tsig.secret, b"secret", "{name}");
    }
}

#[test]
fn reports_every_problem_with_position() {
    let p = problems(&format!(
        r#"{WRITER}
[[service]]
fqdn = "a.example.test"
zone = "example.test"
writer = "primary"
endpoints = ["127.0.0.2", "224.0.0.1"]
[service.check]
type = "tcp"
port = 80

[[service]]
fqdn = "a.example.test"
zone = "example.test"
writer = "primary"
endpoints = ["127.0.0.3"]
[service.check]
type = "tcp"
port = 80
"#
    ));
    let msgs: Vec<String> = p
        .iter()
        .map(|p| format!("{}:{} {}", p.line, p.col, p.message))
        .collect();
    assert_eq!(msgs.len(), 2, "{msgs:#?}");
    assert!(
        msgs[0].starts_with("12:27 ") && msgs[0].contains("not a unicast address"),
        "{msgs:#?}"
    );
    assert!(
        msgs[1].starts_with("18:8 ") && msgs[1].contains("configured twice"),
        "{msgs:#?}"
    );
}

#[test]
fn server_and_servers_are_exclusive() {
    let p = problems(
        "[[writer]]\nname = \"w\"\ntype = \"rfc2136\"\nserver = \"127.0.0.1\"\nservers = [\"127.0.0.1\"]\ntsig = { name = \"k\", algorithm = \"hmac-sha256\", secret = \"c2VjcmV0\" }\n",
    );
    assert_eq!(p.len(), 1);
    assert_eq!((p[0].line, p[0].col), (5, 11));
}

#[test]
fn line_col_counts_from_one() {
    assert_eq!(locate::line_col("ab\ncd", 0), (1, 1));
    assert_eq!(locate::line_col("ab\ncd", 4), (2, 2));
}

#[test]
fn per_service_at_least_is_checked_against_the_node_count() {
    let p = problems(&format!(
        r#"[node]
id = "a"
listen = "127.0.0.1:9053"
[cluster]
secret = "0123456789abcdef"
[[cluster.peers]]
id = "b"
url = "http://127.0.0.1:9054"
{WRITER}
[[service]]
fqdn = "a.example.test"
zone = "example.test"
writer = "primary"
endpoints = ["127.0.0.2"]
quorum = {{ at_least = 3 }}
[service.check]
type = "tcp"
port = 80
"#
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].message
            .contains("at_least = 3 is more than the 2 configured nodes"),
        "{p:?}"
    );
}

#[test]
fn a_service_may_name_several_writers_in_order() {
    let second = WRITER.replace("\"primary\"", "\"cloud\"");
    let c = parse_ok(&format!(
        r#"
{WRITER}
{second}
[[service]]
fqdn = "www.example.test"
zone = "example.test"
writers = ["cloud", "primary"]
endpoints = ["127.0.0.2"]
[service.check]
type = "tcp"
port = 80
"#
    ));
    let s = &c.services[0];
    assert_eq!(s.writers, vec!["cloud".to_owned(), "primary".to_owned()]);
    let names: Vec<&str> = c.writers_of(s).iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, vec!["cloud", "primary"]);
}

fn confirm_service(defaults: &str, own: &str) -> String {
    format!(
        r#"[defaults]
{defaults}
{WRITER}
[[service]]
fqdn = "a.example.test"
zone = "example.test"
writer = "primary"
endpoints = ["127.0.0.2"]
{own}
[service.check]
type = "tcp"
port = 80
"#
    )
}

#[test]
fn confirm_interval_is_a_tenth_of_interval_by_default_and_inherited_when_set() {
    let ms = Duration::from_millis;
    let confirm = |d: &str, o: &str| parse_ok(&confirm_service(d, o)).services[0].confirm_interval;
    assert_eq!(confirm("", ""), Some(ms(100)));
    assert_eq!(confirm("interval = \"5s\"", ""), Some(ms(500)));
    assert_eq!(confirm("", "interval = \"2s\""), Some(ms(200)));
    // Never below the 10 ms minimum, never above the interval.
    assert_eq!(confirm("interval = \"50ms\"", ""), Some(ms(10)));
    assert_eq!(
        crate::config::validate::default_confirm_interval(ms(5)),
        ms(5)
    );
    assert_eq!(confirm("confirm_interval = \"100ms\"", ""), Some(ms(100)));
    assert_eq!(confirm("", "confirm_interval = \"50ms\""), Some(ms(50)));
    assert_eq!(confirm("confirm_interval = \"off\"", ""), None);
    assert_eq!(
        confirm("confirm_interval = \"off\"", "confirm_interval = \"200ms\""),
        Some(ms(200))
    );
    assert_eq!(confirm("", "confirm_interval = \"off\""), None);
    // An inherited value is shortened to a service's shorter interval.
    assert_eq!(
        confirm("confirm_interval = \"2s\"", "interval = \"500ms\""),
        Some(ms(500))
    );
}

#[test]
fn confirm_interval_problems_name_the_key_and_the_fix() {
    let msgs = |d: &str, o: &str| -> Vec<String> {
        problems(&confirm_service(d, o))
            .iter()
            .map(|p| format!("{}:{} {}", p.line, p.col, p.message))
            .collect()
    };
    let m = msgs("", "confirm_interval = \"2s\"");
    assert_eq!(m.len(), 1, "{m:#?}");
    assert!(
        m[0].starts_with("15:20 ") && m[0].contains("longer than interval 1s"),
        "{m:#?}"
    );
    let m = msgs("confirm_interval = \"5ms\"", "");
    assert_eq!(m.len(), 1, "{m:#?}");
    assert!(
        m[0].starts_with("2:20 ") && m[0].contains("write at least \"10ms\", or \"off\""),
        "{m:#?}"
    );
    let m = msgs("confirm_interval = false", "");
    assert!(
        m[0].contains("or \"off\" to turn fast confirmation off"),
        "{m:#?}"
    );
    let m = msgs("", "confirm_interval = \"soon\"");
    assert!(m[0].contains("invalid duration \"soon\""), "{m:#?}");
}

#[test]
fn adaptive_fall_is_on_by_default_and_inherited_when_set() {
    let adaptive = |d: &str, o: &str| parse_ok(&confirm_service(d, o)).services[0].adaptive_fall;
    assert!(adaptive("", ""));
    assert!(!adaptive("adaptive_fall = false", ""));
    assert!(adaptive("adaptive_fall = false", "adaptive_fall = true"));
    assert!(!adaptive("", "adaptive_fall = false"));
}

#[test]
fn max_probes_in_flight_has_a_default_and_a_range() {
    let service = r#"
[[service]]
fqdn = "www.example.test."
zone = "example.test."
writer = "primary"
endpoints = ["192.0.2.1"]
check = { type = "tcp", port = 80 }
"#;
    let c = parse_ok(&format!("{WRITER}{service}"));
    assert_eq!(c.node.max_probes_in_flight, DEFAULT_MAX_PROBES_IN_FLIGHT);
    let c = parse_ok(&format!(
        "[node]\nmax_probes_in_flight = 64\n{WRITER}{service}"
    ));
    assert_eq!(c.node.max_probes_in_flight, 64);
    let p = problems(&format!(
        "[node]\nmax_probes_in_flight = 0\n{WRITER}{service}"
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!((p[0].line, p[0].col), (2, 24), "{p:?}");
    assert!(
        p[0].message
            .contains("max_probes_in_flight 0 is out of range: use 1 to 1048576")
    );
}
