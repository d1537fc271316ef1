//! A scrape's figures, and their text (by `prometheus-client`).
//!
//! The names follow Prometheus' conventions: `oneshotd_` first, base units
//! in the name (`_bytes`), `_total` on counters; every family has HELP and
//! TYPE. Per-connection figures carry a `service` label (the line protocol
//! is `upper`, the endpoint itself `metrics`), so that scrapes never blur
//! what the line service did.

use prometheus_client::encoding::prometheus_text;
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::{Closed, ServiceLabels};

/// One service's figures.
#[derive(Debug, Clone)]
pub(crate) struct ServiceSnapshot {
    pub labels: ServiceLabels,
    pub requests: u64,
    pub received: u64,
    pub sent: u64,
    pub accepted: u64,
    /// By [`super::Refused`].
    pub refused: [u64; super::REFUSED_REASONS],
    /// By [`Closed`].
    pub closed: [u64; Closed::ALL.len()],
    /// Restored at start from the previous instance.
    pub restored: u64,
}

impl ServiceSnapshot {
    /// Open connections: what came in and has not gone yet. Counters read
    /// a moment apart can disagree by a connection or two; never below 0.
    fn open(&self) -> u64 {
        (self.accepted + self.restored).saturating_sub(self.closed.iter().sum())
    }
}

/// Everything a scrape shows, summed at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub(crate) services: Vec<ServiceSnapshot>,
    pub(crate) workers: usize,
    pub(crate) buffers: super::Buffers,
    pub(crate) reloads_ok: u64,
    pub(crate) reloads_failed: u64,
    pub(crate) handed_over: u64,
    pub(crate) restored: u64,
    /// TLS handshakes by [`super::TLS_RESULTS`].
    pub(crate) tls_handshakes: [u64; 3],
    pub(crate) tls_open: u64,
}

impl Closed {
    fn label(self, labels: &ServiceLabels) -> &'static str {
        match self {
            Closed::ClientEof => "client_eof",
            Closed::Idle => "idle",
            Closed::RequestTimeout => "request_timeout",
            Closed::Service => labels.closed_by_service,
            Closed::Error => "error",
            Closed::Reset => "reset",
            Closed::Drain => "drain",
            Closed::Handover => "handover",
            Closed::ProxyHeader => "proxy_header",
            Closed::PerClient => "per_client",
            Closed::Tls => "tls",
        }
    }
}

const REFUSED: [&str; super::REFUSED_REASONS] =
    ["max_connections", "out_of_descriptors", "per_client"];

impl Snapshot {
    /// The exposition in Prometheus' text format, version 0.0.4
    /// ([`CONTENT_TYPE`]): what every Prometheus and `promtool` reads.
    pub fn encode(&self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.clone()));
        let mut text = String::new();
        prometheus_text::encode(&mut text, &registry).expect("writing to a String cannot fail");
        text
    }
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

/// One metric family: its samples as (labels, value).
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    metric_type: MetricType,
    samples: Vec<(Labels<'_>, M)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, unit, metric_type)?;
    for (labels, value) in samples {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(value: u64) -> ConstCounter<u64> {
    ConstCounter::new(value)
}

impl prometheus_client::collector::Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let enc = &mut encoder;
        let per_service = |value: &dyn Fn(&ServiceSnapshot) -> u64| {
            self.services
                .iter()
                .map(|s| (vec![("service", s.labels.name.as_str())], counter(value(s))))
                .collect::<Vec<_>>()
        };
        family(
            enc,
            "oneshotd_build_info",
            "The running build (always 1)",
            None,
            MetricType::Gauge,
            vec![(
                vec![("version", env!("CARGO_PKG_VERSION"))],
                ConstGauge::new(1i64),
            )],
        )?;
        family(
            enc,
            "oneshotd_workers",
            "Worker threads running",
            None,
            MetricType::Gauge,
            vec![(vec![], ConstGauge::new(self.workers as i64))],
        )?;
        family(
            enc,
            "oneshotd_buffered",
            "Bytes allocated for clients that owe replies: replies the kernel has not taken and the input received behind them",
            Some(&Unit::Bytes),
            MetricType::Gauge,
            vec![(vec![], ConstGauge::new(self.buffers.held as i64))],
        )?;
        family(
            enc,
            "oneshotd_buffer_budget",
            "The budget for those bytes (max_buffered_bytes)",
            Some(&Unit::Bytes),
            MetricType::Gauge,
            vec![(vec![], ConstGauge::new(self.buffers.budget as i64))],
        )?;
        family(
            enc,
            "oneshotd_connections_throttled",
            "Connections not read until their clients take replies they owe (past the budget, or past 1 MiB owed)",
            None,
            MetricType::Gauge,
            vec![(vec![], ConstGauge::new(self.buffers.throttled as i64))],
        )?;
        family(
            enc,
            "oneshotd_connections_open",
            "Connections held now",
            None,
            MetricType::Gauge,
            self.services
                .iter()
                .map(|s| {
                    (
                        vec![("service", s.labels.name.as_str())],
                        ConstGauge::new(s.open() as i64),
                    )
                })
                .collect(),
        )?;
        family(
            enc,
            "oneshotd_connections_accepted",
            "Connections accepted and served",
            None,
            MetricType::Counter,
            per_service(&|s| s.accepted),
        )?;
        let refused = self
            .services
            .iter()
            .flat_map(|s| {
                REFUSED.iter().zip(s.refused).map(|(reason, n)| {
                    (
                        vec![("service", s.labels.name.as_str()), ("reason", *reason)],
                        counter(n),
                    )
                })
            })
            .collect();
        family(
            enc,
            "oneshotd_connections_refused",
            "Connections accepted and closed at once, by reason",
            None,
            MetricType::Counter,
            refused,
        )?;
        let closed = self
            .services
            .iter()
            .flat_map(|s| {
                Closed::ALL.iter().zip(s.closed).map(|(reason, n)| {
                    (
                        vec![
                            ("service", s.labels.name.as_str()),
                            ("reason", reason.label(&s.labels)),
                        ],
                        counter(n),
                    )
                })
            })
            .collect();
        family(
            enc,
            "oneshotd_connections_closed",
            "Connections closed, by reason",
            None,
            MetricType::Counter,
            closed,
        )?;
        family(
            enc,
            "oneshotd_requests",
            "Requests served (lines answered; metrics pages sent)",
            None,
            MetricType::Counter,
            per_service(&|s| s.requests),
        )?;
        family(
            enc,
            "oneshotd_received",
            "Bytes received from clients and given to the service",
            Some(&Unit::Bytes),
            MetricType::Counter,
            per_service(&|s| s.received),
        )?;
        family(
            enc,
            "oneshotd_sent",
            "Reply bytes the kernel took for sending",
            Some(&Unit::Bytes),
            MetricType::Counter,
            per_service(&|s| s.sent),
        )?;
        family(
            enc,
            "oneshotd_reloads",
            "Configuration reloads (SIGHUP), by result",
            None,
            MetricType::Counter,
            vec![
                (vec![("result", "ok")], counter(self.reloads_ok)),
                (vec![("result", "failed")], counter(self.reloads_failed)),
            ],
        )?;
        family(
            enc,
            "oneshotd_connections_handed_over",
            "Connections handed over to the next instance at a restart",
            None,
            MetricType::Counter,
            vec![(vec![], counter(self.handed_over))],
        )?;
        family(
            enc,
            "oneshotd_connections_restored",
            "Connections restored from the previous instance at start",
            None,
            MetricType::Counter,
            vec![(vec![], counter(self.restored))],
        )?;
        family(
            enc,
            "oneshotd_tls_handshakes",
            "TLS handshakes, by result",
            None,
            MetricType::Counter,
            super::TLS_RESULTS
                .iter()
                .zip(self.tls_handshakes)
                .map(|(result, n)| (vec![("result", *result)], counter(n)))
                .collect(),
        )?;
        family(
            enc,
            "oneshotd_tls_connections_open",
            "TLS connections held now, in their handshake or past it",
            None,
            MetricType::Gauge,
            vec![(vec![], ConstGauge::new(self.tls_open as i64))],
        )
    }
}
