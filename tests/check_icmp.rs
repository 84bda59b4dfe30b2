//! The `icmp` check, only ever inside a network namespace the test creates (never on the host): the
//! real `rrguard plan` runs in it through `ip netns exec` and probes, with ICMP and ICMPv6 echo, an
//! address of the namespace, the lab's bridge on the other end of a veth, `::1`, and an address
//! nobody holds. Which socket is used depends on `net.ipv4.ping_group_range`, set inside the
//! namespace only, and on the user: root falls back to a raw socket, another user (via `setpriv`)
//! gets a datagram socket when the range allows its group, and a clear error when it does not.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use support::{Lab, Ns, required_tool, rrguard_bin};

/// An unprivileged user and group (Debian's `nobody`/`nogroup`).
const NOBODY: &str = "65534";

/// A lab with one host namespace (`SUBNET.10`) whose `ping_group_range` is `range`, and the
/// directory (readable by every user) holding the config for `rrguard plan`.
fn lab(range: &str) -> (Lab, Ns) {
    let mut lab = Lab::new();
    let ns = lab.add_host("icmp", &[10]);
    let sysctl = required_tool("sysctl", "procps");
    ns.exec(
        &sysctl,
        &["-w", &format!("net.ipv4.ping_group_range={range}")],
        None,
    )
    .unwrap_or_else(|e| panic!("cannot set ping_group_range in {}: {e}", ns.name));
    std::fs::set_permissions(lab.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    (lab, ns)
}

/// Writes a config probing `endpoints` with `check` (the lines after `type = "icmp"`).
fn config(dir: &Path, endpoints: &[String], check: &str) -> PathBuf {
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, "").unwrap();
    let list: Vec<String> = endpoints.iter().map(|e| format!("{e:?}")).collect();
    let text = format!(
        r#"
[defaults]
timeout = "400ms"

[[writer]]
name = "h"
type = "hosts"
path = "{}"

[[service]]
fqdn = "www.example.test"
zone = "example.test"
writer = "h"
endpoints = [{}]
[service.check]
type = "icmp"
{check}
"#,
        hosts.display(),
        list.join(", ")
    );
    let path = dir.join("rrguard.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
}

/// `rrguard plan` inside `ns`, as root or (with `user`) through `setpriv`; the line of each endpoint.
fn plan(ns: &Ns, config: &Path, user: Option<&str>) -> Vec<String> {
    let bin = rrguard_bin();
    let config = config.to_str().unwrap();
    let out = match user {
        None => ns.exec(&bin, &["plan", "-c", config], None),
        Some(uid) => {
            let setpriv = required_tool("setpriv", "util-linux");
            let (reuid, regid) = (format!("--reuid={uid}"), format!("--regid={uid}"));
            ns.exec(
                &setpriv,
                &[
                    &reuid,
                    &regid,
                    "--clear-groups",
                    "--inh-caps=-all",
                    bin.to_str().unwrap(),
                    "plan",
                    "-c",
                    config,
                ],
                None,
            )
        }
    };
    let out = out.unwrap_or_else(|e| panic!("rrguard plan failed: {e}"));
    out.lines()
        .filter(|l| l.starts_with("  ") && !l.trim_start().starts_with(['+', '-', '=']))
        .map(|l| l.trim().to_owned())
        .collect()
}

/// The line of `endpoint` in `lines`.
fn line<'a>(lines: &'a [String], endpoint: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.split_whitespace().next() == Some(endpoint))
        .unwrap_or_else(|| panic!("no line for {endpoint} in {lines:#?}"))
}

#[test]
fn echo_from_an_unprivileged_user_uses_a_datagram_socket() {
    let (lab, ns) = lab("0 2147483647");
    let own = ns.ip().to_string();
    let bridge = lab.addr(1).to_string();
    let nobody = lab.addr(99).to_string();
    let cfg = config(
        lab.dir(),
        &[own.clone(), bridge.clone(), "::1".into(), nobody.clone()],
        "count = 4\necho_interval = \"5ms\"",
    );
    let lines = plan(&ns, &cfg, Some(NOBODY));
    for up in [&own, &bridge, &"::1".to_owned()] {
        let l = line(&lines, up);
        assert!(l.contains(" up "), "{l}");
        assert!(
            l.contains("4/4 echo replies, 0% loss, rtt min/avg/max"),
            "{l}"
        );
        assert!(l.ends_with("(datagram socket)"), "{l}");
    }
    let l = line(&lines, &nobody);
    assert!(l.contains(" down "), "{l}");
    assert!(
        l.contains("0/4 echo replies, 100% loss (above max_loss 50%)"),
        "{l}"
    );
}

#[test]
fn root_without_the_range_falls_back_to_a_raw_socket() {
    // A new namespace's range is "1 0" (nobody); set it explicitly all the same.
    let (lab, ns) = lab("1 0");
    let own = ns.ip().to_string();
    let nobody = lab.addr(99).to_string();
    let cfg = config(lab.dir(), &[own.clone(), nobody.clone()], "count = 2");
    let lines = plan(&ns, &cfg, None);
    let l = line(&lines, &own);
    assert!(l.contains(" up "), "{l}");
    assert!(l.contains("2/2 echo replies"), "{l}");
    assert!(l.ends_with("(raw socket)"), "{l}");
    let l = line(&lines, &nobody);
    assert!(
        l.contains(" down ") && l.contains("0/2 echo replies"),
        "{l}"
    );
}

#[test]
fn no_permission_for_either_socket_is_a_clear_error() {
    let (lab, ns) = lab("1 0");
    let own = ns.ip().to_string();
    let cfg = config(lab.dir(), std::slice::from_ref(&own), "");
    let lines = plan(&ns, &cfg, Some(NOBODY));
    let l = line(&lines, &own);
    assert!(l.contains(" down "), "{l}");
    assert!(
        l.contains("cannot open an ICMP socket: not permitted")
            && l.contains("net.ipv4.ping_group_range")
            && l.contains("CAP_NET_RAW"),
        "{l}"
    );
}

#[test]
fn loss_above_max_loss_fails_and_below_passes() {
    let (lab, ns) = lab("0 2147483647");
    let own = ns.ip().to_string();
    // Every other echo request to the address is dropped in the namespace's input hook: 50% loss.
    ns.nft(&format!(
        "table inet rrg {{\n\
         \x20   chain in {{ type filter hook input priority 0; policy accept; }}\n\
         }}\n\
         add rule inet rrg in ip daddr {own} icmp type echo-request numgen inc mod 2 == 0 drop\n"
    ));
    let strict = config(
        lab.dir(),
        std::slice::from_ref(&own),
        "count = 4\nmax_loss = \"25%\"",
    );
    let lines = plan(&ns, &strict, Some(NOBODY));
    let l = line(&lines, &own);
    assert!(
        l.contains(" down ") && l.contains("2/4 echo replies, 50% loss (above max_loss 25%)"),
        "{l}"
    );
    let lenient = config(
        lab.dir(),
        std::slice::from_ref(&own),
        "count = 4\nmax_loss = \"50%\"",
    );
    let lines = plan(&ns, &lenient, Some(NOBODY));
    let l = line(&lines, &own);
    assert!(
        l.contains(" up ") && l.contains("2/4 echo replies, 50% loss"),
        "{l}"
    );
}
