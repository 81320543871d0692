//! API tokens: `ast_<id>_<secret>`, each of one organization and with its [`Scopes`].
//!
//! The secret is 256 random bits, so it needs no slow password hash: the store keeps
//! `hmac-sha256:<hex>`, an HMAC-SHA-256 of the secret under the server key, and a request's token
//! is found in one indexed query by that value. A wrong token costs one HMAC and one query, the
//! same whether its id exists or not: knowing a token's id no longer lets anyone burn CPU.
//!
//! **The server key** is 32 random bytes made on first use and kept in the database
//! (`server_keys`), so every daemon of a PostgreSQL fleet uses the same one. It is defence in
//! depth, not the secret that guards tokens: an HMAC of a 256-bit random secret cannot be
//! reversed or guessed with or without the key; the key makes a hash copied from one database
//! useless against another installation's tokens.
//!
//! **Tokens made before this scheme** hold an Argon2id hash. They keep working: a token not
//! found by its HMAC is looked up by id, verified with Argon2 once (a few at a time, see
//! [`Authenticator`]), and its hash is replaced by the HMAC, so every later request takes the
//! one-query path. Once no active token has an Argon2 hash left, the fallback is not even
//! tried.
//!
//! The row is read on every request, so a revoked token stops working at once.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::store::{Store, StoreError, TokenRecord};

/// The prefix every token starts with.
pub const TOKEN_PREFIX: &str = "ast_";

/// How a token's secret is stored: this prefix and the hex HMAC-SHA-256.
const HMAC_PREFIX: &str = "hmac-sha256:";
/// The name of the HMAC key in `server_keys`.
const KEY_NAME: &str = "token_hmac";
/// How often `last_used_at` is written for one token.
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// How many tokens' last writes are remembered at most.
const TOUCH_MAX: usize = 10_000;
/// How long "no Argon2 token is left" is believed before the store is asked again (a daemon
/// of an older version in the fleet could still make one).
const LEGACY_RECHECK: Duration = Duration::from_secs(300);

/// What a token may do. Each REST route needs one (see the README's route table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Read calls, the live feed and the monitor page.
    Monitor,
    /// Place calls and run campaigns (create, import, start, pause, stop), the do-not-call
    /// list (read, add).
    Dial,
    /// Remove numbers from the do-not-call list, and settings.
    Admin,
    /// Step into live calls: listen, coach the AI, pause it (the supervisors' console).
    Supervise,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Monitor, Scope::Dial, Scope::Admin, Scope::Supervise];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Monitor => "monitor",
            Scope::Dial => "dial",
            Scope::Admin => "admin",
            Scope::Supervise => "supervise",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(text: &str) -> Result<Scope, String> {
        Scope::ALL
            .into_iter()
            .find(|s| s.as_str() == text.trim())
            .ok_or_else(|| format!("unknown scope {text:?}; expected monitor, dial, admin or supervise"))
    }
}

/// A set of scopes, written `monitor,dial`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    /// Every scope.
    pub fn all() -> Scopes {
        Scopes::from_iter(Scope::ALL)
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Parses a comma list (`monitor,dial`; `all` for every scope); unknown names are an error.
    pub fn parse(text: &str) -> Result<Scopes, String> {
        let mut scopes = Scopes::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "all" {
                scopes = Scopes::all();
            } else {
                scopes.0 |= part.parse::<Scope>()?.bit();
            }
        }
        Ok(scopes)
    }

    /// The scopes as stored: names of known scopes, anything else ignored (a newer daemon's).
    pub fn from_stored(names: &[String]) -> Scopes {
        Scopes::from_iter(names.iter().filter_map(|n| n.parse::<Scope>().ok()))
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Scopes {
        Scopes(iter.into_iter().fold(0, |bits, s| bits | s.bit()))
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Scope::as_str).collect();
        f.write_str(&names.join(","))
    }
}

/// Who a request acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: String,
    pub org_id: i64,
    pub org_slug: String,
    pub scopes: Scopes,
}

impl Principal {
    /// Refuses a request this token's scopes do not cover.
    pub fn require(&self, scope: Scope) -> Result<(), AuthError> {
        if self.scopes.contains(scope) { Ok(()) } else { Err(AuthError::Forbidden { needed: scope, has: self.scopes }) }
    }
}

/// Why a token was refused. The message is safe to return to the client: it never contains the
/// token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing token: send `Authorization: Bearer <token>`")]
    Missing,
    #[error(
        "a token in the URL (?token=) is accepted only by the WebSocket upgrades: the feed (GET /v1/feed), listening (GET /v1/calls/{{id}}/listen) and barging in (GET /v1/calls/{{id}}/barge); send `Authorization: Bearer <token>`"
    )]
    InQuery,
    #[error("malformed token: expected ast_<id>_<secret>")]
    Malformed,
    #[error("unknown or wrong token")]
    Invalid,
    #[error("token revoked")]
    Revoked,
    #[error(
        "this token lacks the `{needed}` scope (it has: {}); create one with `asterai token create --scope {needed}`",
        if has.is_empty() { "none".to_owned() } else { has.to_string() }
    )]
    Forbidden { needed: Scope, has: Scopes },
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// A freshly created token: shown once, never stored in clear.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub record: TokenRecord,
    /// The whole token, to hand to the client.
    pub token: String,
}

/// OWASP's minimum for Argon2id: 19 MiB, 2 passes, 1 lane (the hashes of older tokens).
fn argon2() -> Argon2<'static> {
    Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(19 * 1024, 2, 1, None).expect("valid Argon2 parameters"),
    )
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hashes a token secret as an Argon2id PHC string, as tokens were stored before the HMAC
/// scheme. Kept for tests of the upgrade path.
pub fn hash_secret(secret: &str) -> String {
    let salt = SaltString::encode_b64(&random_bytes::<16>()).expect("16-byte salt");
    argon2().hash_password(secret.as_bytes(), &salt).expect("Argon2 hashing with valid parameters").to_string()
}

fn verify_secret(secret: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| argon2().verify_password(secret.as_bytes(), &parsed).is_ok())
}

/// `hmac-sha256:<hex>` of a secret under `key`.
fn keyed_hash(key: &[u8], secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(secret.as_bytes());
    format!("{HMAC_PREFIX}{}", hex(&mac.finalize().into_bytes()))
}

/// The server key, made on first use and shared through the database.
async fn server_key(store: &Store) -> Result<Vec<u8>, StoreError> {
    let stored = store.server_key(KEY_NAME, &hex(&random_bytes::<32>())).await?;
    let key: Option<Vec<u8>> = (0..stored.len())
        .step_by(2)
        .map(|i| stored.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect();
    key.filter(|k| k.len() >= 16)
        .ok_or_else(|| StoreError::Invalid(format!("server_keys.{KEY_NAME}: expected at least 32 hex digits")))
}

/// Splits `ast_<id>_<secret>`.
fn split(token: &str) -> Result<(&str, &str), AuthError> {
    let rest = token.trim().strip_prefix(TOKEN_PREFIX).ok_or(AuthError::Malformed)?;
    let (id, secret) = rest.split_once('_').ok_or(AuthError::Malformed)?;
    let hex = id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex || secret.len() < 32 || secret.len() > 128 {
        return Err(AuthError::Malformed);
    }
    Ok((id, secret))
}

/// Creates a token for an organization with `scopes`. The returned [`NewToken::token`] is the
/// only copy.
pub async fn create_token(store: &Store, org_id: i64, name: &str, scopes: Scopes) -> Result<NewToken, StoreError> {
    if scopes.is_empty() {
        return Err(StoreError::Invalid("a token needs at least one scope: monitor, dial, admin or supervise".into()));
    }
    let id = hex(&random_bytes::<8>());
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>());
    let hash = keyed_hash(&server_key(store).await?, &secret);
    let record = store.insert_token(&id, org_id, name, &hash, &scopes.to_string()).await?;
    Ok(NewToken { token: format!("{TOKEN_PREFIX}{id}_{secret}"), record })
}

/// Checks tokens against the store.
pub struct Authenticator {
    store: Store,
    key: tokio::sync::OnceCell<Vec<u8>>,
    /// Whether a token with an Argon2 hash may still be active, and when that was learnt.
    legacy: Mutex<Option<(bool, Instant)>>,
    /// Argon2 checks of older tokens running at once. Each costs 19 MiB and tens of
    /// milliseconds; they happen once per older token, then it has an HMAC.
    hashing: tokio::sync::Semaphore,
    /// When each token's use was last written.
    touched: Mutex<HashMap<String, Instant>>,
}

impl Authenticator {
    pub fn new(store: Store) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Authenticator {
            store,
            key: tokio::sync::OnceCell::new(),
            legacy: Mutex::new(None),
            hashing: tokio::sync::Semaphore::new(cores),
            touched: Mutex::new(HashMap::new()),
        }
    }

    async fn key(&self) -> Result<&[u8], StoreError> {
        self.key.get_or_try_init(|| server_key(&self.store)).await.map(Vec::as_slice)
    }

    /// Whether a token with an Argon2 hash may still be active (asks the store at most every
    /// [`LEGACY_RECHECK`], and after each upgrade).
    async fn legacy_possible(&self) -> Result<bool, StoreError> {
        let known = *self.legacy.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((possible, at)) = known
            && (possible || at.elapsed() < LEGACY_RECHECK)
        {
            return Ok(possible);
        }
        let possible = self.store.legacy_tokens().await? > 0;
        *self.legacy.lock().unwrap_or_else(|p| p.into_inner()) = Some((possible, Instant::now()));
        Ok(possible)
    }

    /// Resolves a token to its organization and scopes, or says why not.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let (id, secret) = split(token)?;
        let hash = keyed_hash(self.key().await?, secret);
        let record = match self.store.token_by_hash(&hash).await? {
            Some(record) if record.id == id => record,
            Some(_) => return Err(AuthError::Invalid),
            None => self.upgrade_legacy(id, secret, &hash).await?,
        };
        if record.revoked_at.is_some() {
            return Err(AuthError::Revoked);
        }
        self.touch(&record.id);
        Ok(Principal {
            token_id: record.id,
            org_id: record.org_id,
            org_slug: record.org_slug,
            scopes: Scopes::from_stored(&record.scopes),
        })
    }

    /// A token not found by its HMAC: one made before the HMAC scheme, verified with Argon2
    /// once and given its HMAC; anything else is refused.
    async fn upgrade_legacy(&self, id: &str, secret: &str, hash: &str) -> Result<TokenRecord, AuthError> {
        if !self.legacy_possible().await? {
            return Err(AuthError::Invalid);
        }
        let record = self.store.token(id).await?.ok_or(AuthError::Invalid)?;
        if !record.secret_hash.starts_with("$argon2") {
            return Err(AuthError::Invalid);
        }
        if record.revoked_at.is_some() {
            return Err(AuthError::Revoked);
        }
        let _permit = self.hashing.acquire().await.map_err(|_| AuthError::Invalid)?;
        let (secret, stored) = (secret.to_owned(), record.secret_hash.clone());
        let ok = tokio::task::spawn_blocking(move || verify_secret(&secret, &stored)).await.unwrap_or(false);
        if !ok {
            return Err(AuthError::Invalid);
        }
        if self.store.rehash_token(&record.id, &record.secret_hash, hash).await? {
            tracing::info!(token_id = %record.id, "token upgraded from Argon2id to the HMAC hash");
        }
        *self.legacy.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(record)
    }

    /// Records the token's use, at most once a [`TOUCH_EVERY`], off the request's path.
    fn touch(&self, id: &str) {
        {
            let mut touched = self.touched.lock().unwrap_or_else(|p| p.into_inner());
            if touched.get(id).is_some_and(|at| at.elapsed() < TOUCH_EVERY) {
                return;
            }
            if touched.len() >= TOUCH_MAX {
                touched.retain(|_, at| at.elapsed() < TOUCH_EVERY);
                if touched.len() >= TOUCH_MAX {
                    touched.clear();
                }
            }
            touched.insert(id.to_owned(), Instant::now());
        }
        let store = self.store.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            if let Err(e) = store.touch_token(&id).await {
                tracing::debug!(token_id = %id, "recording token use failed: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_tokens_split() {
        let hash = hash_secret("s3cret-s3cret-s3cret-s3cret-s3cret");
        assert!(hash.starts_with("$argon2id$"));
        assert!(!hash.contains("s3cret"));
        assert!(verify_secret("s3cret-s3cret-s3cret-s3cret-s3cret", &hash));
        assert!(!verify_secret("wrong", &hash));
        let token = "ast_0123456789abcdef_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        assert_eq!(split(token).unwrap(), ("0123456789abcdef", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
        for bad in [
            "",
            "Bearer x",
            "ast_",
            "ast_zz_secret",
            "ast_0123456789abcdef_short",
            "xyz_0123456789abcdef_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert!(split(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_keyed_hash_is_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            keyed_hash(b"Jefe", "what do ya want for nothing?"),
            "hmac-sha256:5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn scopes_parse_and_print() {
        assert_eq!(Scopes::parse("monitor, dial").unwrap().to_string(), "monitor,dial");
        assert_eq!(Scopes::parse("all").unwrap(), Scopes::all());
        assert!(Scopes::parse("").unwrap().is_empty());
        assert!(Scopes::parse("monitor,root").unwrap_err().contains("root"));
        let stored = Scopes::from_stored(&["admin".into(), "future".into()]);
        assert_eq!(stored.to_string(), "admin");
        let principal = Principal { token_id: "t".into(), org_id: 1, org_slug: "acme".into(), scopes: stored };
        let err = principal.require(Scope::Dial).unwrap_err().to_string();
        assert!(err.contains("`dial` scope") && err.contains("it has: admin"), "{err}");
    }
}
