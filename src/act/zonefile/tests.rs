use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::config::{Generated, SerialStyle, Soa, ZoneSource};
use super::zone::{Current, Frame, NameRecords, render};
use super::{next_serial, serial_gt};
use crate::config::{ConfigError, WriterKind, ZonefileConfig, parse};

const ZONE: &str = "example.test.";

fn generated(include: Option<&Path>) -> ZoneSource {
    ZoneSource::Generated(Generated {
        soa: Soa {
            mname: "ns1.example.test.".into(),
            rname: "hostmaster.example.test.".into(),
            refresh: 3600,
            retry: 600,
            expire: 1209600,
            minimum: 60,
        },
        ns: vec!["ns1.example.test.".into(), "ns2.example.net.".into()],
        default_ttl: 3600,
        include: include.map(Path::to_path_buf),
    })
}

fn records(addresses: &[(&str, u32)]) -> NameRecords {
    NameRecords {
        addresses: addresses
            .iter()
            .map(|(ip, ttl)| (ip.parse().unwrap(), *ttl))
            .collect(),
        cname: None,
    }
}

#[test]
fn serials_increase_in_rfc_1982_arithmetic() {
    assert!(serial_gt(2, 1) && !serial_gt(1, 2) && !serial_gt(5, 5));
    // Past the wrap: 0 follows 4294967295.
    assert!(serial_gt(0, u32::MAX));
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_717_243_200); // 2024-06-01T12:00:00Z
    assert_eq!(next_serial(SerialStyle::Unixtime, now, None), 1_717_243_200);
    assert_eq!(next_serial(SerialStyle::Date, now, None), 2_024_060_100);
    // Never lower than the file's serial, even one an operator raised above the clock's.
    assert_eq!(
        next_serial(SerialStyle::Unixtime, now, Some(2_024_060_105)),
        2_024_060_106
    );
    assert_eq!(
        next_serial(SerialStyle::Date, now, Some(2_024_060_100)),
        2_024_060_101
    );
    assert_eq!(
        next_serial(SerialStyle::Unixtime, now, Some(1_717_243_200)),
        1_717_243_201
    );
    let end = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX));
    assert_eq!(next_serial(SerialStyle::Unixtime, end, Some(u32::MAX)), 0);
    // 1717243200 would be greater than 4000000000 in RFC 1982 arithmetic, but an operator would read
    // it as going down: one more it is.
    assert_eq!(
        next_serial(SerialStyle::Unixtime, now, Some(4_000_000_000)),
        4_000_000_001
    );
}

#[test]
fn a_rendered_file_parses_back_into_fixed_and_managed_records() {
    let dir = tempfile::tempdir().unwrap();
    let include = dir.path().join("static.zone");
    std::fs::write(
        &include,
        "; static\nns1 A 127.0.0.1\n@ MX 10 mail\nmail 300 A 192.0.2.25\ntxt TXT \"two words\" \"and more\"\n$ORIGIN sub.example.test.\nx CNAME ns1.example.test.\n",
    )
    .unwrap();
    let frame = Frame::load(&generated(Some(&include)), ZONE).unwrap();
    let mut managed = BTreeMap::new();
    managed.insert(
        "www.example.test.".to_owned(),
        records(&[("192.0.2.1", 30), ("2001:db8::1", 45)]),
    );
    managed.insert(
        "alias.example.test.".to_owned(),
        NameRecords {
            addresses: BTreeMap::new(),
            cname: Some(("www.example.test.".into(), 30)),
        },
    );
    let text = render(&frame, 7, &managed);
    let path = dir.path().join("example.test.zone");
    let current = Current::parse(&text, ZONE, &path, &frame).unwrap();
    assert_eq!(current.serial, Some(7));
    assert_eq!(current.managed, managed, "{text}");
    assert_eq!(
        current.fixed["mail.example.test."],
        records(&[("192.0.2.25", 300)])
    );
    // The include's $ORIGIN does not reach the managed section, nor its names the managed ones.
    assert_eq!(
        current.fixed["x.sub.example.test."].cname,
        Some(("ns1.example.test.".into(), 3600))
    );
    assert!(current.in_use.contains("txt.example.test."));
    assert_eq!(
        current.all["www.example.test."],
        managed["www.example.test."]
    );
    // The same data renders the same text: no write.
    assert_eq!(render(&frame, 7, &current.managed), text);
}

#[test]
fn a_hand_written_zone_is_taken_over_with_its_address_records() {
    let frame = Frame::load(&generated(None), ZONE).unwrap();
    let text = "$ORIGIN example.test.\n$TTL 60\n@ SOA ns1 hostmaster 41 3600 600 86400 60\n@ NS ns1\nns1 A 127.0.0.1\nwww 30 A 127.0.0.2\n";
    let current = Current::parse(text, ZONE, Path::new("z"), &frame).unwrap();
    assert_eq!(current.serial, Some(41));
    assert_eq!(
        current.managed.keys().collect::<Vec<_>>(),
        ["ns1.example.test.", "www.example.test."]
    );
    assert_eq!(
        current.managed["www.example.test."],
        records(&[("127.0.0.2", 30)])
    );
    // Records rrguard would drop are refused, with what to do about them.
    let txt = format!("{text}info TXT \"x\"\n");
    let err = Current::parse(&txt, ZONE, Path::new("z"), &frame).unwrap_err();
    assert!(
        err.contains("info.example.test. TXT") && err.contains("move them to the include file"),
        "{err}"
    );
}

#[test]
fn the_managed_section_keeps_only_address_and_cname_records() {
    let frame = Frame::load(&generated(None), ZONE).unwrap();
    let text = render(&frame, 3, &BTreeMap::new());
    let edited = text.replace(
        "; END rrguard",
        "www 30 A 192.0.2.9\nwww TXT \"hello\"\n; END rrguard",
    );
    let err = Current::parse(&edited, ZONE, Path::new("/z"), &frame).unwrap_err();
    assert!(err.contains("www.example.test. TXT between"), "{err}");
    // A relative name and no TTL inside the section are an operator's right.
    let edited = text.replace("; END rrguard", "www A 192.0.2.9\n; END rrguard");
    let current = Current::parse(&edited, ZONE, Path::new("/z"), &frame).unwrap();
    assert_eq!(
        current.managed["www.example.test."],
        records(&[("192.0.2.9", 3600)])
    );
    // Broken markers name the line.
    let broken = text.replace("; END rrguard\n", "");
    let err = Current::parse(&broken, ZONE, Path::new("/z"), &frame).unwrap_err();
    // Three comment lines, $ORIGIN, $TTL, SOA, two NS, then the BEGIN line.
    assert!(err.starts_with("/z:9: `; BEGIN rrguard` has no"), "{err}");
}

fn zonefile(extra: &str, files: &[(&str, &str)]) -> Result<ZonefileConfig, Vec<String>> {
    zonefile_in(&tempfile::tempdir().unwrap(), extra, files)
}

fn zonefile_in(
    dir: &tempfile::TempDir,
    extra: &str,
    files: &[(&str, &str)],
) -> Result<ZonefileConfig, Vec<String>> {
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let text = format!(
        "[[writer]]\nname = \"edge\"\ntype = \"zonefile\"\npath = \"example.test.zone\"\nzone = \"Example.Test\"\n{extra}\n\n[[service]]\nfqdn = \"www.example.test\"\nzone = \"example.test\"\nwriter = \"edge\"\nendpoints = [\"127.0.0.2\"]\n[service.check]\ntype = \"tcp\"\nport = 80\n"
    );
    match parse(&dir.path().join("rrguard.toml"), &text) {
        Ok(c) => match &c.writers[0].kind {
            WriterKind::Zonefile(z) => Ok(z.clone()),
            other => panic!("{other:?}"),
        },
        Err(ConfigError::Invalid { problems, .. }) => {
            Err(problems.into_iter().map(|p| p.message).collect())
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn config_defaults_and_the_generated_header() {
    let c = zonefile("ns = [\"ns1.example.test\"]", &[]).unwrap();
    assert_eq!(c.zone, "example.test.");
    assert_eq!(c.serial, SerialStyle::Unixtime);
    let ZoneSource::Generated(g) = &c.source else {
        panic!("{c:?}")
    };
    assert_eq!(g.soa.mname, "ns1.example.test.");
    assert_eq!(g.soa.rname, "hostmaster.example.test.");
    assert_eq!(
        (
            g.soa.refresh,
            g.soa.retry,
            g.soa.expire,
            g.soa.minimum,
            g.default_ttl
        ),
        (3600, 600, 1209600, 60, 3600)
    );
    let c = zonefile(
        "ns = [\"a.example.net.\"]\nsoa_rname = \"dns.example.net\"\nrefresh = \"2h\"\nserial = \"date\"\ncheck_command = [\"named-checkzone\", \"{zone}\", \"{path}\"]",
        &[],
    )
    .unwrap();
    let ZoneSource::Generated(g) = &c.source else {
        panic!()
    };
    assert_eq!(
        (g.soa.rname.as_str(), g.soa.refresh),
        ("dns.example.net.", 7200)
    );
    assert_eq!(c.serial, SerialStyle::Date);
}

#[test]
fn config_problems_name_the_fix() {
    let problems =
        |extra: &str, files: &[(&str, &str)]| zonefile(extra, files).unwrap_err().join("\n");
    let p = problems("", &[]);
    assert!(p.contains("needs `ns = [\"ns1.example.com\"]`"), "{p}");
    let p = problems("ns = [\"ns1\"]\nsoa_rname = \"me@example.test\"", &[]);
    assert!(
        p.contains("write the mailbox as a DNS name, the @ as a dot: \"me.example.test\""),
        "{p}"
    );
    let p = problems(
        "ns = [\"ns1\"]\nreload_command = [\"rndc\", \"reload\", \"{zonename}\"]",
        &[],
    );
    assert!(p.contains("unknown placeholder \"{zonename}\""), "{p}");
    let p = problems("ns = [\"ns1\"]\nrefresh = \"1500ms\"", &[]);
    assert!(p.contains("whole seconds"), "{p}");
    let p = problems("template = \"t.zone\"\nns = [\"ns1\"]", &[("t.zone", "")]);
    assert!(p.contains("`ns` does nothing with `template`"), "{p}");
    let p = problems(
        "ns = [\"ns1\"]\ninclude = \"s.zone\"",
        &[("s.zone", "@ SOA a b 1 2 3 4 5\n")],
    );
    assert!(p.contains("holds an SOA record"), "{p}");
    let p = problems(
        "ns = [\"ns1\"]\ninclude = \"s.zone\"",
        &[("s.zone", "www.example.org. A 192.0.2.1\n")],
    );
    assert!(
        p.contains("www.example.org. is not inside zone example.test."),
        "{p}"
    );
    let p = problems(
        "ns = [\"ns1\"]\ninclude = \"s.zone\"",
        &[("s.zone", "x A 192.0.2.1\n$INCLUDE other\n")],
    );
    assert!(p.contains("s.zone:2: $INCLUDE is not supported"), "{p}");
    let p = problems(
        "ns = [\"ns1\"]\ninclude = \"s.zone\"",
        &[("s.zone", "x A not-an-address\n")],
    );
    assert!(p.contains("s.zone does not parse as a zone file"), "{p}");
    let p = problems("ns = [\"ns1\"]\ninclude = \"missing.zone\"", &[]);
    assert!(p.contains("cannot read the include file"), "{p}");
}

#[test]
fn templates_need_both_placeholders_and_an_soa() {
    let good = "$ORIGIN example.test.\n$TTL 300\n@ SOA ns1 hostmaster {{serial}} 1h 10m 2w 60\n@ NS ns1\nns1 A 127.0.0.1\n{{records}}\nafter A 192.0.2.99\n";
    let dir = tempfile::tempdir().unwrap();
    let c = zonefile_in(&dir, "template = \"t.zone\"", &[("t.zone", good)]).unwrap();
    let ZoneSource::Template(t) = &c.source else {
        panic!()
    };
    let frame = Frame::load(&c.source, ZONE).unwrap();
    assert!(t.ends_with("t.zone"));
    let mut managed = BTreeMap::new();
    managed.insert(
        "www.example.test.".to_owned(),
        records(&[("192.0.2.1", 30)]),
    );
    let text = render(&frame, 99, &managed);
    assert!(text.contains("hostmaster 99 1h"), "{text}");
    assert!(
        text.ends_with("; END rrguard\nafter A 192.0.2.99\n"),
        "{text}"
    );
    let current = Current::parse(&text, ZONE, Path::new("z"), &frame).unwrap();
    assert_eq!(current.managed, managed);
    assert!(current.fixed.contains_key("after.example.test."));
    for (template, want) in [
        (good.replace("{{serial}}", "1"), "has {{serial}} 0 times"),
        (
            good.replace("{{records}}", "; none"),
            "has {{records}} 0 times",
        ),
        (
            good.replace("{{records}}", "x {{records}}"),
            "must stand alone on its line",
        ),
        (
            good.replace("ns1 A", "{{zone}} A"),
            "unknown placeholder at \"{{zone}} A",
        ),
        (
            good.replace("@ SOA ns1 hostmaster {{serial}}", "@ SOA ns1 hostmaster 1")
                .replace("@ NS", "; {{serial}}\n@ NS"),
            "must be the serial of the SOA",
        ),
    ] {
        let p = zonefile("template = \"t.zone\"", &[("t.zone", &template)])
            .unwrap_err()
            .join("\n");
        assert!(p.contains(want), "{want}: {p}");
    }
}
