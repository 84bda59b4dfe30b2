//! Shared HTTP clients: one `reqwest::Client` (and one rustls configuration) per distinct client
//! configuration, not per endpoint.
//!
//! A client used to be built per endpoint, and each build read the system certificate store (~110 KB
//! and ~1.4 ms each: 14 s and over 1 GB at 10,000 endpoints). Now what lives on a client is the
//! [`ClientKey`] (TLS verification and roots, client certificate, source address, redirect limit), and
//! probes with equal keys share one client through a process-wide cache of weak references: the client
//! goes away with the last probe that uses it (a reload that changes the check builds a new one).
//! Everything per endpoint or per check stays on the request: URL, Host, headers, User-Agent, timeout.
//!
//! How a shared client reaches the right address: the service's name is resolved by
//! [`EndpointResolver`], which answers with the address of the probe being run (a task-local set by
//! [`with_endpoint`] around the request), so Host and TLS SNI carry the name while the connection goes
//! to the endpoint. This relies on the client having no connection pool
//! (`pool_max_idle_per_host(0)`): hyper then connects inside the request's own future, within the
//! task-local's scope, and no connection is ever handed from one endpoint's probe to another's. A
//! resolution outside any probe fails instead of falling back to the system resolver.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::WeakCache;
use super::tls::{self, TlsKey};
use crate::observe::probe::ProbeBuildError;

tokio::task_local! {
    /// The endpoint the running probe connects to.
    static ENDPOINT: IpAddr;
}

/// Everything a client holds that differs between checks: probes with equal keys share a client.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct ClientKey {
    /// Server certificate verification and the client certificate.
    pub tls: TlsKey,
    /// Local address connections are made from (`source_address`).
    pub source_address: Option<IpAddr>,
    /// Redirects followed (`follow_redirects`); 0: none.
    pub follow_redirects: u32,
}

/// Clients built since the process started (distinct configurations, plus rebuilds after every probe of
/// one was dropped). For tests and benchmarks.
static BUILT: AtomicUsize = AtomicUsize::new(0);

/// How many HTTP clients this process has built so far: one per distinct client configuration in use,
/// however many endpoints share it.
pub fn clients_built() -> usize {
    BUILT.load(Ordering::Relaxed)
}

/// The client of `key`: the one already in use by other probes, or a new one.
///
/// # Errors
/// [`ProbeBuildError`] if the TLS setup or the client cannot be built.
pub(super) fn shared(key: &ClientKey) -> Result<Arc<reqwest::Client>, ProbeBuildError> {
    static CLIENTS: WeakCache<ClientKey, reqwest::Client> = WeakCache::new();
    CLIENTS.get_or_build(
        |k| k == key,
        || key.clone(),
        || {
            let client = build(key)?;
            BUILT.fetch_add(1, Ordering::Relaxed);
            Ok(client)
        },
    )
}

/// Runs `request` (a probe's use of its shared client) connecting to `ip`.
pub(super) async fn with_endpoint<F: Future>(ip: IpAddr, request: F) -> F::Output {
    ENDPOINT.scope(ip, request).await
}

fn build(key: &ClientKey) -> Result<reqwest::Client, ProbeBuildError> {
    let limit = key.follow_redirects as usize;
    let redirect = if limit == 0 {
        reqwest::redirect::Policy::none()
    } else {
        // Redirects stay on the probed endpoint (the resolver sends every name there), so one to
        // another host would probe the wrong server under that host's name: refused.
        reqwest::redirect::Policy::custom(move |attempt| {
            let first = attempt.previous().first().and_then(|u| u.host_str());
            if first.is_some() && attempt.url().host_str() != first {
                let to = attempt.url().host_str().unwrap_or("").to_owned();
                attempt.error(format!(
                    "redirect to another host {to:?} not followed (a check probes one endpoint)"
                ))
            } else if attempt.previous().len() > limit {
                attempt.error(format!("more than {limit} redirect(s) (follow_redirects)"))
            } else {
                attempt.follow()
            }
        })
    };
    Ok(reqwest::Client::builder()
        // No pool: a fresh connection per probe (a pooled one could hide a dead listener), and the
        // connection is made inside the probe's future, where the resolver knows its endpoint.
        .pool_max_idle_per_host(0)
        .redirect(redirect)
        .no_proxy()
        .dns_resolver(EndpointResolver)
        .local_address(key.source_address)
        // The peer certificate, for `cert_expiry_warning`; a copy of its DER per connection.
        .tls_info(true)
        .tls_backend_preconfigured(tls::client_config(&key.tls)?)
        .build()?)
}

/// Resolves every name to the endpoint of the probe being run; see the module documentation.
struct EndpointResolver;

impl reqwest::dns::Resolve for EndpointResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let endpoint = ENDPOINT.try_with(|ip| *ip);
        let name = name.as_str().to_owned();
        Box::pin(async move {
            match endpoint {
                // Port 0: reqwest puts the URL's port in.
                Ok(ip) => Ok(Box::new(std::iter::once(SocketAddr::new(ip, 0))) as _),
                Err(_) => Err(format!(
                    "no endpoint to connect to for {name}: HTTP probe run outside with_endpoint"
                )
                .into()),
            }
        })
    }
}
