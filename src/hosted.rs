//! A service as the dispatcher holds it, whatever its session type: one
//! object-safe interface over every [`Stateful`], with sessions boxed as
//! `Any`. A stateless service's session, `()`, boxes without allocating.

use std::any::{Any, TypeId};
use std::fmt;
use std::sync::Arc;

use crate::close::Closed;
use crate::service::{ConnectionId, Input, Peer, Served, Stateful};

/// A connection's session, whatever its service's type.
pub(crate) type ErasedSession = Box<dyn Any + Send>;

/// A service to serve on a listener: any [`Stateful`] (every
/// [`Service`](crate::service::Service) is one), made from an `Arc` of it
/// or from the service itself.
#[derive(Clone)]
pub struct Hosted(pub(crate) Arc<dyn Erased>);

impl fmt::Debug for Hosted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Hosted").field(&self.0.name()).finish()
    }
}

impl<S: Stateful> From<Arc<S>> for Hosted {
    fn from(service: Arc<S>) -> Self {
        Hosted(service)
    }
}

impl<S: Stateful> From<S> for Hosted {
    fn from(service: S) -> Self {
        Hosted(Arc::new(service))
    }
}

impl From<Arc<dyn crate::service::Service>> for Hosted {
    fn from(service: Arc<dyn crate::service::Service>) -> Self {
        Hosted(Arc::new(Unsized(service)))
    }
}

/// An `Arc<dyn Service>`, which is a [`Stateful`] behind a pointer.
struct Unsized(Arc<dyn crate::service::Service>);

impl Hosted {
    /// The service, as the dispatcher calls it.
    pub(crate) fn get(&self) -> &dyn Erased {
        &*self.0
    }
}

/// Where a connection keeps its session, and who it is (for opening one).
pub(crate) struct SessionSlot<'a> {
    session: &'a mut Option<ErasedSession>,
    connection: ConnectionId,
    peer: &'a Peer,
}

impl<'a> SessionSlot<'a> {
    pub(crate) fn new(
        session: &'a mut Option<ErasedSession>,
        connection: ConnectionId,
        peer: &'a Peer,
    ) -> Self {
        SessionSlot {
            session,
            connection,
            peer,
        }
    }
}

/// [`Stateful`] with the session type erased. A stateless service's
/// session, `()`, is never boxed nor looked up: its calls cost what a
/// [`Service`](crate::service::Service)'s did.
pub(crate) trait Erased: Send + Sync {
    fn serve(&self, slot: SessionSlot<'_>, input: Input<'_>, output: &mut Vec<u8>) -> Served;
    fn request_timeout(&self, slot: SessionSlot<'_>, output: &mut Vec<u8>);
    fn request_too_long(&self, slot: SessionSlot<'_>, output: &mut Vec<u8>);
    fn greeting(&self, slot: SessionSlot<'_>, output: &mut Vec<u8>) -> bool;
    fn closed(&self, session: ErasedSession, why: Closed);
    fn save(&self, session: &ErasedSession, out: &mut Vec<u8>) -> bool;
    fn restore(&self, saved: &[u8], format: u32) -> Option<ErasedSession>;
    fn session_format(&self) -> u32;
    fn name(&self) -> &'static str;
    fn closed_by_service(&self) -> &'static str;
    fn proxy_protocol(&self) -> bool;
    fn deadline_from_accept(&self) -> bool;
    fn connection_limit(&self) -> Option<usize>;
}

/// Calls `f` with the connection's session as its service's own type,
/// opening it first if need be. A [`Service`](crate::service::Service)'s
/// `()` session is made on the spot (both tests are decided at compile
/// time), so a stateless service neither allocates nor looks anything up.
/// A `Stateful` of its own with `()` sessions is opened and told of the
/// close like any other.
fn with_session<S: Stateful + ?Sized, R>(
    service: &S,
    slot: SessionSlot<'_>,
    f: impl FnOnce(&mut S::Session) -> R,
) -> R {
    if S::STATELESS && TypeId::of::<S::Session>() == TypeId::of::<()>() {
        let mut unit = ();
        let unit = (&mut unit as &mut dyn Any)
            .downcast_mut::<S::Session>()
            .expect("the session type is ()");
        return f(unit);
    }
    let SessionSlot {
        session,
        connection,
        peer,
    } = slot;
    let session = session.get_or_insert_with(|| Box::new(service.open(connection, peer)));
    f(session
        .downcast_mut()
        .expect("a session is only handed to the service that opened it"))
}

impl<S: Stateful + ?Sized> Erased for S {
    fn serve(&self, slot: SessionSlot<'_>, input: Input<'_>, output: &mut Vec<u8>) -> Served {
        with_session(self, slot, |session| {
            Stateful::serve(self, session, input, output)
        })
    }

    fn request_timeout(&self, slot: SessionSlot<'_>, output: &mut Vec<u8>) {
        with_session(self, slot, |session| {
            Stateful::request_timeout(self, session, output)
        })
    }

    fn request_too_long(&self, slot: SessionSlot<'_>, output: &mut Vec<u8>) {
        with_session(self, slot, |session| {
            Stateful::request_too_long(self, session, output)
        })
    }

    fn greeting(&self, slot: SessionSlot<'_>, output: &mut Vec<u8>) -> bool {
        with_session(self, slot, |session| {
            Stateful::greeting(self, session, output)
        })
    }

    fn closed(&self, session: ErasedSession, why: Closed) {
        if let Ok(session) = session.downcast::<S::Session>() {
            Stateful::closed(self, *session, why);
        }
    }

    fn save(&self, session: &ErasedSession, out: &mut Vec<u8>) -> bool {
        session
            .downcast_ref()
            .is_some_and(|session| Stateful::save(self, session, out))
    }

    fn restore(&self, saved: &[u8], format: u32) -> Option<ErasedSession> {
        Stateful::restore(self, saved, format).map(|session| Box::new(session) as ErasedSession)
    }

    fn session_format(&self) -> u32 {
        Stateful::session_format(self)
    }

    fn name(&self) -> &'static str {
        Stateful::name(self)
    }

    fn closed_by_service(&self) -> &'static str {
        Stateful::closed_by_service(self)
    }

    fn proxy_protocol(&self) -> bool {
        Stateful::proxy_protocol(self)
    }

    fn deadline_from_accept(&self) -> bool {
        Stateful::deadline_from_accept(self)
    }

    fn connection_limit(&self) -> Option<usize> {
        Stateful::connection_limit(self)
    }
}

impl Erased for Unsized {
    fn serve(&self, slot: SessionSlot<'_>, input: Input<'_>, output: &mut Vec<u8>) -> Served {
        Erased::serve(&*self.0, slot, input, output)
    }
    fn request_timeout(&self, slot: SessionSlot<'_>, output: &mut Vec<u8>) {
        Erased::request_timeout(&*self.0, slot, output)
    }
    fn request_too_long(&self, slot: SessionSlot<'_>, output: &mut Vec<u8>) {
        Erased::request_too_long(&*self.0, slot, output)
    }
    fn greeting(&self, slot: SessionSlot<'_>, output: &mut Vec<u8>) -> bool {
        Erased::greeting(&*self.0, slot, output)
    }
    fn closed(&self, session: ErasedSession, why: Closed) {
        Erased::closed(&*self.0, session, why)
    }
    fn save(&self, session: &ErasedSession, out: &mut Vec<u8>) -> bool {
        Erased::save(&*self.0, session, out)
    }
    fn restore(&self, saved: &[u8], format: u32) -> Option<ErasedSession> {
        Erased::restore(&*self.0, saved, format)
    }
    fn session_format(&self) -> u32 {
        Erased::session_format(&*self.0)
    }
    fn name(&self) -> &'static str {
        Erased::name(&*self.0)
    }
    fn closed_by_service(&self) -> &'static str {
        Erased::closed_by_service(&*self.0)
    }
    fn proxy_protocol(&self) -> bool {
        Erased::proxy_protocol(&*self.0)
    }
    fn deadline_from_accept(&self) -> bool {
        Erased::deadline_from_accept(&*self.0)
    }
    fn connection_limit(&self) -> Option<usize> {
        Erased::connection_limit(&*self.0)
    }
}
