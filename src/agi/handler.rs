//! What serves a route: a [`Handler`] takes one [`AgiSession`] and returns a [`HandlerResult`].
//! Any `async fn(AgiSession) -> HandlerResult` is one. The [`Router`](super::Router) maps routes
//! to handlers; the built-in ones are in [`routes`](super::routes).

use std::future::Future;
use std::pin::Pin;

use super::session::AgiSession;

/// What a handler returns; errors are logged with the session's span.
pub type HandlerResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// A boxed handler future.
pub type HandlerFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send>>;

/// Handles the sessions of one route.
pub trait Handler: Send + Sync + 'static {
    fn call(&self, session: AgiSession) -> HandlerFuture;
}

impl<F, Fut> Handler for F
where
    F: Fn(AgiSession) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    fn call(&self, session: AgiSession) -> HandlerFuture {
        Box::pin(self(session))
    }
}
