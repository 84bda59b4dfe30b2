use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// One request as the loopback server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    peer: IpAddr,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type Answer = dyn Fn(&Seen) -> (u16, String) + Send + Sync;

/// A real HTTP/1.1 server on 127.0.0.1:0 answering each request with `answer`; every request kept.
async fn server(answer: Arc<Answer>) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, peer)) = listener.accept().await {
            let answer = answer.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&buf).to_string();
                let mut lines = text.split("\r\n");
                let mut first = lines.next().unwrap_or("").split(' ');
                let req = Seen {
                    method: first.next().unwrap_or("").to_owned(),
                    path: first.next().unwrap_or("").to_owned(),
                    headers: lines
                        .take_while(|l| !l.is_empty())
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                        .collect(),
                    peer: peer.ip(),
                };
                let (status, body) = answer(&req);
                log.lock().unwrap().push(req);
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    (addr, seen)
}

fn cfg(address: &str, family: Option<AddressFamily>) -> SelfRegisterConfig {
    SelfRegisterConfig {
        address: address.parse().unwrap(),
        family,
        remove_on_shutdown: false,
    }
}

#[test]
fn sources_parse_and_print_in_config_spelling() {
    for s in [
        "interface:eth0",
        "url:http://127.0.0.1:8080/ip",
        "metadata:http://169.254.169.254/latest/meta-data/public-ipv4",
    ] {
        assert_eq!(s.parse::<AddressSource>().unwrap().to_string(), s);
    }
    for (bad, says) in [
        ("eth0", "has no source"),
        ("interface:", "needs an interface name"),
        ("url:ftp://x", "needs an http:// or https:// URL"),
        ("dhcp:eth0", "unknown source \"dhcp\""),
    ] {
        let e = bad.parse::<AddressSource>().unwrap_err();
        assert!(e.contains(says), "{bad}: {e}");
    }
}

#[test]
fn retry_delay_doubles_up_to_the_cap() {
    assert_eq!(retry_delay(0), RETRY_MIN);
    assert_eq!(retry_delay(1), RETRY_MIN * 2);
    assert_eq!(retry_delay(40), RETRY_MAX);
}

#[tokio::test]
async fn loopback_interface_gives_its_ipv4_address() {
    let ip = discover(&cfg("interface:lo", None)).await.unwrap();
    assert_eq!(ip, "127.0.0.1".parse::<IpAddr>().unwrap());
    let e = discover(&cfg("interface:no-such-if0", None))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no interface \"no-such-if0\"") && e.contains("lo"),
        "{e}"
    );
}

#[tokio::test]
async fn echo_url_gives_the_callers_address() {
    let (addr, seen) = server(Arc::new(|r: &Seen| (200, format!("{}\n", r.peer)))).await;
    let ip = discover(&cfg(
        &format!("url:http://{addr}/ip"),
        Some(AddressFamily::Ipv4),
    ))
    .await
    .unwrap();
    assert_eq!(ip, seen.lock().unwrap()[0].peer);
    // The same answer is refused when another family is asked for.
    let e = discover(&cfg(
        &format!("url:http://{addr}/ip"),
        Some(AddressFamily::Ipv6),
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("is not an ipv6 address"), "{e}");
}

#[tokio::test]
async fn bad_answers_name_the_source_and_what_came_back() {
    let (addr, _) = server(Arc::new(|r: &Seen| match r.path.as_str() {
        "/html" => (200, "<html>hello</html>".to_owned()),
        _ => (503, "busy".to_owned()),
    }))
    .await;
    let e = discover(&cfg(&format!("url:http://{addr}/html"), None))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("\"url:http://{addr}/html\"")) && e.contains("<html>hello</html>"),
        "{e}"
    );
    let e = discover(&cfg(&format!("url:http://{addr}/down"), None))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("HTTP 503") && e.contains("busy"), "{e}");
    // Nothing listens there any more once the listener is dropped: a request error, not a panic.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let e = discover(&cfg(&format!("url:http://{free}/"), None))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("request failed"), "{e}");
}

#[tokio::test]
async fn metadata_uses_the_imdsv2_token() {
    // Stands in for the AWS instance metadata service: the address only with a valid token.
    let (addr, seen) = server(Arc::new(|r: &Seen| {
        match (r.method.as_str(), r.path.as_str()) {
            ("PUT", "/latest/api/token")
                if r.header("X-aws-ec2-metadata-token-ttl-seconds").is_some() =>
            {
                (200, "TOKEN-1".to_owned())
            }
            ("GET", "/latest/meta-data/public-ipv4")
                if r.header("X-aws-ec2-metadata-token") == Some("TOKEN-1") =>
            {
                (200, "198.51.100.7".to_owned())
            }
            _ => (401, String::new()),
        }
    }))
    .await;
    let src = format!("metadata:http://{addr}/latest/meta-data/public-ipv4");
    let ip = discover(&cfg(&src, None)).await.unwrap();
    assert_eq!(ip, "198.51.100.7".parse::<IpAddr>().unwrap());
    assert_eq!(seen.lock().unwrap().len(), 2);
    // The same URL as a plain echo URL sends no token: refused, and said so.
    let e = discover(&cfg(&src.replacen("metadata:", "url:", 1), None))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("HTTP 401"), "{e}");
}

#[tokio::test]
async fn metadata_without_a_token_service_sends_the_flavor_headers() {
    // GCP: no /latest/api/token (404), the GET needs Metadata-Flavor: Google.
    let (addr, _) = server(Arc::new(|r: &Seen| {
        if r.method == "GET" && r.header("Metadata-Flavor") == Some("Google") {
            (200, "2001:db8::7".to_owned())
        } else {
            (404, String::new())
        }
    }))
    .await;
    let ip = discover(&cfg(
        &format!("metadata:http://{addr}/computeMetadata/v1/ip"),
        None,
    ))
    .await
    .unwrap();
    assert_eq!(ip, "2001:db8::7".parse::<IpAddr>().unwrap());
}
