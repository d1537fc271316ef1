//! The metrics endpoint: `GET /metrics` over HTTP/1.1, answered in
//! Prometheus' text format (`text/plain; version=0.0.4`), as a [`Service`] of
//! the same dispatcher as the line protocol (so it has the same timeouts,
//! throttling and drain, and no thread of its own).
//!
//! One request per connection: the request (its head; a body is not read)
//! must arrive whole within [`MAX_REQUEST_BYTES`] and `request_timeout_ms`;
//! it gets one response with `Content-Type` and `Content-Length`, then the
//! connection is closed. Everything else gets a status and a one-line
//! reason: 400 malformed, 404 another path, 405 another method, 408 too
//! slow, 431 too large.
//!
//! `GET /ready` is the readiness check of load balancers (HAProxy's
//! `httpchk`, Kubernetes' readiness probes): `200 ready` while the daemon
//! serves, `503 draining` from SIGTERM on.

use std::sync::Arc;

use super::render::CONTENT_TYPE;
use super::Metrics;
use crate::availability::Availability;
use crate::service::{Input, Served, Service};

/// The largest request head accepted (8 KiB); past it the answer is 431.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// Scrapes in progress at once. They have this budget of their own, outside
/// `max_connections`, so that a daemon full of clients can still be watched;
/// a scraper holds one connection per scrape, and a few scrapers (an HA
/// pair, an operator's curl) are far below it. A client that holds one
/// without asking is closed at the request timeout.
pub const MAX_SCRAPES: usize = 64;

/// Headers parsed at most; more is answered as a request too large.
const MAX_HEADERS: usize = 64;

/// The HTTP service that shows a [`Metrics`].
#[derive(Debug, Clone)]
pub struct MetricsEndpoint {
    metrics: Arc<Metrics>,
    availability: Option<Arc<Availability>>,
}

impl MetricsEndpoint {
    /// An endpoint that shows `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        MetricsEndpoint {
            metrics,
            availability: None,
        }
    }

    /// The same, answering `GET /ready` from `availability` (without it,
    /// `/ready` is not found).
    pub fn with_availability(self, availability: Arc<Availability>) -> Self {
        MetricsEndpoint {
            availability: Some(availability),
            ..self
        }
    }
}

/// What a request head amounts to.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Not all there yet.
    Incomplete,
    /// Answer with the page.
    Metrics,
    /// Answer whether the daemon is ready.
    Ready,
    /// Answer with this status and reason.
    Refuse(u16, &'static str),
}

fn judge(bytes: &[u8], eof: bool) -> Verdict {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(head)) if head > MAX_REQUEST_BYTES => {
            Verdict::Refuse(431, "Request Header Fields Too Large")
        }
        Ok(httparse::Status::Complete(_)) => {
            if request.method != Some("GET") {
                return Verdict::Refuse(405, "Method Not Allowed");
            }
            let path = request.path.unwrap_or("");
            let path = path.split_once('?').map_or(path, |(path, _query)| path);
            match path {
                "/metrics" => Verdict::Metrics,
                "/ready" => Verdict::Ready,
                _ => Verdict::Refuse(404, "Not Found"),
            }
        }
        Ok(httparse::Status::Partial) if bytes.len() > MAX_REQUEST_BYTES => {
            Verdict::Refuse(431, "Request Header Fields Too Large")
        }
        Ok(httparse::Status::Partial) if eof => Verdict::Refuse(400, "Bad Request"),
        Ok(httparse::Status::Partial) => Verdict::Incomplete,
        Err(httparse::Error::TooManyHeaders) => {
            Verdict::Refuse(431, "Request Header Fields Too Large")
        }
        Err(_) => Verdict::Refuse(400, "Bad Request"),
    }
}

/// Appends a whole response: status line, headers, body.
fn respond(output: &mut Vec<u8>, status: u16, reason: &str, content_type: &str, body: &[u8]) {
    let allow = if status == 405 { "Allow: GET\r\n" } else { "" };
    output.extend_from_slice(
        format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n\
             Content-Length: {}\r\n{allow}Connection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    output.extend_from_slice(body);
}

/// The content type of the short answers.
const TEXT: &str = "text/plain; charset=utf-8";

fn refuse(output: &mut Vec<u8>, status: u16, reason: &str) {
    let body = format!("{status} {reason}\n");
    respond(output, status, reason, TEXT, body.as_bytes());
}

impl Service for MetricsEndpoint {
    fn serve(&self, input: Input<'_>, output: &mut Vec<u8>) -> Served {
        if input.bytes.is_empty() && !input.eof {
            return Served::default();
        }
        match judge(input.bytes, input.eof) {
            Verdict::Incomplete => Served::default(),
            Verdict::Metrics => {
                let page = self.metrics.snapshot().encode();
                respond(output, 200, "OK", CONTENT_TYPE, page.as_bytes());
                answered(input)
            }
            Verdict::Ready => {
                match self.availability.as_deref().map(Availability::draining) {
                    Some(false) => respond(output, 200, "OK", TEXT, b"ready\n"),
                    Some(true) => respond(output, 503, "Service Unavailable", TEXT, b"draining\n"),
                    None => refuse(output, 404, "Not Found"),
                }
                answered(input)
            }
            Verdict::Refuse(status, reason) => {
                refuse(output, status, reason);
                answered(input)
            }
        }
    }

    fn request_timeout(&self, output: &mut Vec<u8>) {
        refuse(output, 408, "Request Timeout");
    }

    fn request_too_long(&self, output: &mut Vec<u8>) {
        refuse(output, 431, "Request Header Fields Too Large");
    }

    fn name(&self) -> &'static str {
        "metrics"
    }

    /// A scraper asks as soon as it connects; 64 that do not must not
    /// blind the endpoint for `idle_timeout_ms`.
    fn deadline_from_accept(&self) -> bool {
        true
    }

    fn closed_by_service(&self) -> &'static str {
        "replied"
    }

    fn connection_limit(&self) -> Option<usize> {
        Some(MAX_SCRAPES)
    }
}

/// One request answered: everything consumed, close once it is sent.
fn answered(input: Input<'_>) -> Served {
    Served {
        consumed: input.bytes.len(),
        close: true,
        requests: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let cases: &[(&[u8], bool, Verdict)] = &[
            (
                b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
                false,
                Verdict::Metrics,
            ),
            (
                b"GET /metrics?x=1 HTTP/1.0\r\n\r\n",
                false,
                Verdict::Metrics,
            ),
            (
                b"GET /metrics HTTP/1.1\r\nHost: x\r\n",
                false,
                Verdict::Incomplete,
            ),
            (
                b"GET /metrics HTTP/1.1\r\n",
                true,
                Verdict::Refuse(400, "Bad Request"),
            ),
            (
                b"POST /metrics HTTP/1.1\r\n\r\n",
                false,
                Verdict::Refuse(405, "Method Not Allowed"),
            ),
            (
                b"HEAD /metrics HTTP/1.1\r\n\r\n",
                false,
                Verdict::Refuse(405, "Method Not Allowed"),
            ),
            (
                b"GET / HTTP/1.1\r\n\r\n",
                false,
                Verdict::Refuse(404, "Not Found"),
            ),
            (
                b"GET /metricsx HTTP/1.1\r\n\r\n",
                false,
                Verdict::Refuse(404, "Not Found"),
            ),
            (b"hello\n", false, Verdict::Refuse(400, "Bad Request")),
            (
                b"GET /metrics HTTP/2.0\r\n\r\n",
                false,
                Verdict::Refuse(400, "Bad Request"),
            ),
        ];
        for (bytes, eof, verdict) in cases {
            assert_eq!(
                &judge(bytes, *eof),
                verdict,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        let mut long = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        long.resize(MAX_REQUEST_BYTES + 1, b'a');
        assert_eq!(
            judge(&long, false),
            Verdict::Refuse(431, "Request Header Fields Too Large")
        );
        long.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            judge(&long, false),
            Verdict::Refuse(431, "Request Header Fields Too Large")
        );
    }
}
