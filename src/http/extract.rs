//! Who a request acts for, as extractors: a handler names the scope it needs in its signature
//! (`caller: Authorized<Dial>`) and runs only for a token that holds it.
//!
//! * [`Authorized`]: every REST route. The token comes from `Authorization: Bearer <token>`
//!   (the scheme in any case) and from nowhere else: a token in the query string is refused,
//!   because URLs end up in proxy and access logs.
//! * [`AuthorizedUpgrade`]: the feed's WebSocket upgrade, the one request that may also carry
//!   `?token=`, since a browser cannot set headers on a WebSocket.
//!
//! Both resolve the token to its [`Principal`] (organization and scopes) and refuse it with 401
//! (missing, malformed, unknown, revoked) or 403 naming the scope it lacks.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::ops::Deref;

use axum::extract::{FromRequestParts, Query};
use axum::http::HeaderMap;
use axum::http::request::Parts;

use super::{ApiError, AppState};
use crate::auth::{AuthError, Principal, Scope};

/// A scope a route requires, as a type, so that the handler's signature says which.
pub trait RouteScope: Send + Sync + 'static {
    const SCOPE: Scope;
}

/// Reads: calls, campaigns, the live feed.
pub struct Monitor;
/// Places calls, runs campaigns, reads and adds to the do-not-call list.
pub struct Dial;
/// Removes from the do-not-call list; creates and changes agents.
pub struct Admin;

impl RouteScope for Monitor {
    const SCOPE: Scope = Scope::Monitor;
}
impl RouteScope for Dial {
    const SCOPE: Scope = Scope::Dial;
}
impl RouteScope for Admin {
    const SCOPE: Scope = Scope::Admin;
}
/// Steps into live calls: listen, coach, pause the AI.
pub struct Supervise;
impl RouteScope for Supervise {
    const SCOPE: Scope = Scope::Supervise;
}

/// The caller of a REST route: the organization and scopes of the `Authorization: Bearer`
/// token, which holds the scope `S`. Dereferences to the [`Principal`].
pub struct Authorized<S> {
    principal: Principal,
    scope: PhantomData<fn() -> S>,
}

/// The caller of a WebSocket upgrade (the feed, listening, barging in): as [`Authorized`], but
/// the token may also come as `?token=`.
pub struct AuthorizedUpgrade<S> {
    principal: Principal,
    scope: PhantomData<fn() -> S>,
}

impl<S: RouteScope> FromRequestParts<AppState> for Authorized<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = match bearer(&parts.headers)? {
            Some(token) => token,
            None if query(parts).contains_key("token") => return Err(AuthError::InQuery.into()),
            None => return Err(AuthError::Missing.into()),
        };
        let principal = authorize(state, token, S::SCOPE).await?;
        if let Some(slot) = parts.extensions.get::<super::compliance::AuditSlot>() {
            slot.set(&principal);
        }
        Ok(Authorized { principal, scope: PhantomData })
    }
}

impl<S: RouteScope> FromRequestParts<AppState> for AuthorizedUpgrade<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let in_query;
        let token = match bearer(&parts.headers)? {
            Some(token) => token,
            None => {
                in_query = query(parts).remove("token").ok_or(AuthError::Missing)?;
                in_query.as_str()
            }
        };
        let principal = authorize(state, token, S::SCOPE).await?;
        Ok(AuthorizedUpgrade { principal, scope: PhantomData })
    }
}

impl<S> Deref for Authorized<S> {
    type Target = Principal;
    fn deref(&self) -> &Principal {
        &self.principal
    }
}

impl<S> Deref for AuthorizedUpgrade<S> {
    type Target = Principal;
    fn deref(&self) -> &Principal {
        &self.principal
    }
}

impl<S> AuthorizedUpgrade<S> {
    pub fn into_principal(self) -> Principal {
        self.principal
    }
}

/// The token's principal, if the token is valid and holds `scope`.
async fn authorize(state: &AppState, token: &str, scope: Scope) -> Result<Principal, ApiError> {
    let principal = state.inner.auth.authenticate(token).await?;
    principal.require(scope)?;
    Ok(principal)
}

/// The query string's parameters, read the way the handlers' `Query` reads them.
fn query(parts: &Parts) -> HashMap<String, String> {
    Query::<HashMap<String, String>>::try_from_uri(&parts.uri).map(|Query(query)| query).unwrap_or_default()
}

/// The token of `Authorization: Bearer <token>` (the scheme in any case), if the header is there.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, AuthError> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else { return Ok(None) };
    let value = value.to_str().map_err(|_| AuthError::Malformed)?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(Some(token.trim())),
        _ => Err(AuthError::Malformed),
    }
}
