//! Integration tests: the real binary (or the library's dispatcher, for
//! tests that need a custom service) over real sockets; and
//! `architecture`, the layers of `docs/architecture.md` held against the
//! imports of `src/`.

mod util;

mod activation;
mod architecture;
mod balancer;
mod budget;
mod config;
mod handover;
mod hostile;
mod idle;
mod isolation;
mod lifecycle;
mod limits;
mod metrics;
mod metrics_hostile;
mod protocol;
mod proxy;
mod resp;
mod sessions;
mod stress;
mod tls;
