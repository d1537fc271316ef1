//! Listeners with different services: which service each listener's
//! connections get, which connection limit they count against, and how the
//! services are named in the metrics.

use std::io;
use std::sync::Arc;

use super::{Dispatcher, Server};
use crate::config::Config;
use crate::hosted::Hosted;
use crate::listeners::Listener;
use crate::metrics::{Buffers, Gauges, Metrics, ServiceLabels, MAX_SERVICES};

/// A listener, the service its connections get, and whether they speak
/// TLS (with the configuration's `tls_certificate` and `tls_private_key`).
#[derive(Debug)]
pub struct Endpoint {
    /// The listening socket.
    pub listener: Listener,
    /// What its connections are served by.
    pub service: Hosted,
    /// Its connections begin with a TLS handshake.
    pub tls: bool,
}

impl From<(Listener, Hosted)> for Endpoint {
    /// A plain endpoint.
    fn from((listener, service): (Listener, Hosted)) -> Self {
        Endpoint {
            listener,
            service,
            tls: false,
        }
    }
}

impl Server {
    /// Registers each listener with the service its connections get (e.g.
    /// the line protocol on some, the metrics endpoint on another) and
    /// starts `config.workers` workers serving them all, counting into
    /// `metrics`. The first endpoint's service is the one connections
    /// restored at a restart get. At most [`MAX_SERVICES`] distinct
    /// services (told apart by `Arc::ptr_eq`). A TLS endpoint needs the
    /// configuration's TLS files.
    pub fn start_endpoints(
        config: &Config,
        endpoints: Vec<impl Into<Endpoint>>,
        metrics: Arc<Metrics>,
    ) -> io::Result<Server> {
        let mut services: Vec<Hosted> = Vec::new();
        let mut listeners = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let Endpoint {
                listener,
                service,
                tls,
            } = endpoint.into();
            let index = match services.iter().position(|s| Arc::ptr_eq(&s.0, &service.0)) {
                Some(index) => index,
                None => {
                    services.push(service);
                    services.len() - 1
                }
            };
            listeners.push((listener, index as u8, tls));
        }
        if services.len() > MAX_SERVICES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("at most {MAX_SERVICES} distinct services per server"),
            ));
        }
        Server::start_serving(config, services, listeners, metrics)
    }
}

impl Gauges for Dispatcher {
    fn workers(&self) -> usize {
        self.pool.live()
    }

    fn buffers(&self) -> Buffers {
        Buffers {
            held: self.budget.held(),
            budget: self.budget.limit(),
            throttled: self.budget.throttled(),
        }
    }
}

/// Each service's labels; a name used twice gets its index appended, so
/// that no two services' series are the same.
pub(super) fn service_labels(services: &[Hosted]) -> Vec<ServiceLabels> {
    services
        .iter()
        .enumerate()
        .map(|(index, service)| {
            let name = service.get().name();
            let name_taken_twice = services.iter().filter(|s| s.get().name() == name).count() > 1;
            ServiceLabels {
                name: if name_taken_twice {
                    format!("{name}{index}")
                } else {
                    name.to_owned()
                },
                closed_by_service: service.get().closed_by_service(),
            }
        })
        .collect()
}

/// Each service's admission budget (by service index), and how many
/// connections the budgets of their own allow in all. Budget 0 is
/// `max_connections`, shared by every service without a limit of its own
/// ([`Service::connection_limit`](crate::service::Service::connection_limit)); each service with one gets the next.
pub(super) fn admission_budgets(services: &[Hosted]) -> (Vec<usize>, usize) {
    let mut own = 0;
    let mut extra = 0;
    let budget_of = services
        .iter()
        .map(|service| match service.get().connection_limit() {
            Some(limit) => {
                own += 1;
                extra = limit.saturating_add(extra);
                own
            }
            None => 0,
        })
        .collect();
    (budget_of, extra)
}
