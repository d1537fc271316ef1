//! The PROXY protocol (versions 1 and 2, as HAProxy defines them): the
//! header a load balancer sends before its client's bytes, and the sources
//! trusted to send one.

pub mod header;
pub mod sources;
