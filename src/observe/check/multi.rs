//! Several checks of one service (`[[service.check]]`, an array of tables): every probe runs all of
//! them at once against the endpoint and combines their results by the service's `check_mode`:
//! `"all"` (the default) passes when every check passes, `"any"` when at least one does.
//!
//! The detail names each check by its type (`tcp`, or `tcp#2` for the second tcp check of the
//! service) with its own detail, the failing ones first when the probe fails:
//! `failed tcp: connection refused; passed http: HTTP 200`. The latency is the slowest check's, as
//! the checks run concurrently and the probe ends with the last of them.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::task::JoinSet;

use super::CheckConfig;
use crate::observe::probe::{Probe, ProbeBuildError, ProbeResult, timed_out};

/// How the results of several checks make the verdict (`check_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckMode {
    /// Every check must pass. The default.
    #[default]
    All,
    /// At least one check must pass.
    Any,
}

impl fmt::Display for CheckMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckMode::All => "all",
            CheckMode::Any => "any",
        })
    }
}

/// Several checks, validated: at least two, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct MultiCheckConfig {
    /// How their results combine.
    pub mode: CheckMode,
    /// The checks (none of them itself several).
    pub checks: Vec<CheckConfig>,
}

impl MultiCheckConfig {
    /// The label of each check in details: its type, numbered when the type occurs more than once.
    pub fn labels(&self) -> Vec<String> {
        let names: Vec<String> = self.checks.iter().map(CheckConfig::type_name).collect();
        names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                if names.iter().filter(|m| *m == n).count() > 1 {
                    let nth = names[..=i].iter().filter(|m| *m == n).count();
                    format!("{n}#{nth}")
                } else {
                    n.clone()
                }
            })
            .collect()
    }

    /// Builds the probe of endpoint `ip`: one probe per check.
    ///
    /// # Errors
    /// [`ProbeBuildError`] if one of the checks' probes cannot be built.
    pub fn build(&self, ip: IpAddr, timeout: Duration) -> Result<MultiProbe, ProbeBuildError> {
        let probes = self
            .checks
            .iter()
            .map(|c| c.build(ip, timeout).map(std::sync::Arc::from))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MultiProbe {
            mode: self.mode,
            labels: self.labels(),
            probes,
            timeout,
        })
    }
}

/// The probe of several checks of one endpoint.
pub struct MultiProbe {
    mode: CheckMode,
    labels: Vec<String>,
    probes: Vec<std::sync::Arc<dyn Probe>>,
    timeout: Duration,
}

impl MultiProbe {
    /// Combines the results, in check order.
    fn combine(&self, results: Vec<ProbeResult>) -> ProbeResult {
        let passed = results.iter().filter(|r| r.ok).count();
        let ok = match self.mode {
            CheckMode::All => passed == results.len(),
            CheckMode::Any => passed > 0,
        };
        let latency = results.iter().map(|r| r.latency).max().unwrap_or_default();
        let line = |(label, r): (&String, &ProbeResult)| {
            format!(
                "{} {label}: {}",
                if r.ok { "passed" } else { "failed" },
                r.detail
            )
        };
        let (failed, good): (Vec<_>, Vec<_>) =
            self.labels.iter().zip(&results).partition(|(_, r)| !r.ok);
        let mut parts: Vec<String> = Vec::new();
        if ok {
            parts.extend(good.into_iter().map(line));
            parts.extend(failed.into_iter().map(line));
        } else {
            parts.extend(failed.into_iter().map(line));
            parts.extend(good.into_iter().map(line));
        }
        ProbeResult {
            ok,
            latency,
            detail: parts.join("; "),
        }
    }
}

#[async_trait]
impl Probe for MultiProbe {
    async fn probe(&self) -> ProbeResult {
        let mut running = JoinSet::new();
        for (i, p) in self.probes.iter().enumerate() {
            let (p, timeout) = (p.clone(), self.timeout);
            running.spawn(async move {
                let r = tokio::time::timeout(timeout, p.probe())
                    .await
                    .unwrap_or_else(|_| timed_out(timeout));
                (i, r)
            });
        }
        let mut results: Vec<Option<ProbeResult>> = vec![None; self.probes.len()];
        while let Some(joined) = running.join_next().await {
            if let Ok((i, r)) = joined {
                results[i] = Some(r);
            }
        }
        let results = results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| ProbeResult {
                    ok: false,
                    latency: Duration::ZERO,
                    detail: "check did not finish".to_owned(),
                })
            })
            .collect();
        self.combine(results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::check::TcpCheckConfig;

    /// A probe that always gives `result`.
    struct Fixed(ProbeResult);

    #[async_trait]
    impl Probe for Fixed {
        async fn probe(&self) -> ProbeResult {
            self.0.clone()
        }
    }

    fn result(ok: bool, ms: u64, detail: &str) -> ProbeResult {
        ProbeResult {
            ok,
            latency: Duration::from_millis(ms),
            detail: detail.to_owned(),
        }
    }

    fn multi(mode: CheckMode, results: Vec<ProbeResult>) -> MultiProbe {
        let config = MultiCheckConfig {
            mode,
            checks: vec![
                CheckConfig::Tcp(TcpCheckConfig::connect(25)),
                CheckConfig::Icmp(Default::default()),
                CheckConfig::Tcp(TcpCheckConfig::connect(80)),
            ],
        };
        MultiProbe {
            mode,
            labels: config.labels(),
            probes: results
                .into_iter()
                .map(|r| std::sync::Arc::new(Fixed(r)) as std::sync::Arc<dyn Probe>)
                .collect(),
            timeout: Duration::from_secs(1),
        }
    }

    #[tokio::test]
    async fn all_fails_on_one_failure_and_names_it_first() {
        let p = multi(
            CheckMode::All,
            vec![
                result(true, 5, "connected"),
                result(true, 30, "3/3 echo replies"),
                result(false, 10, "connection refused"),
            ],
        );
        let r = p.probe().await;
        assert!(!r.ok);
        assert_eq!(r.latency, Duration::from_millis(30), "the slowest check's");
        assert_eq!(
            r.detail,
            "failed tcp#2: connection refused; passed tcp#1: connected; passed icmp: 3/3 echo replies"
        );
    }

    #[tokio::test]
    async fn any_passes_on_one_success_and_fails_on_none() {
        let one = multi(
            CheckMode::Any,
            vec![
                result(false, 5, "refused"),
                result(true, 1, "ok"),
                result(false, 5, "refused"),
            ],
        );
        let r = one.probe().await;
        assert!(r.ok);
        assert!(
            r.detail.starts_with("passed icmp: ok; failed tcp#1"),
            "{r:?}"
        );
        let none = multi(CheckMode::Any, vec![result(false, 1, "x"); 3]);
        assert!(!none.probe().await.ok);
        let all = multi(CheckMode::All, vec![result(true, 1, "y"); 3]);
        assert!(all.probe().await.ok);
    }

    #[test]
    fn type_name_joins_the_checks() {
        let c = CheckConfig::Several(MultiCheckConfig {
            mode: CheckMode::All,
            checks: vec![
                CheckConfig::Icmp(Default::default()),
                CheckConfig::Tcp(TcpCheckConfig::connect(80)),
            ],
        });
        assert_eq!(c.type_name(), "icmp+tcp");
        assert_eq!(c.each().len(), 2);
    }
}
