//! API tokens: `ast_<id>_<secret>`. The id is public and indexes the row; only an Argon2id hash
//! of the secret is stored. Each token belongs to one organization, the only one whose data it
//! can reach.
//!
//! Verifying the hash costs tens of milliseconds on purpose, so a verified token is remembered (by
//! a SHA-256 of the whole token, never the token itself) for a while. The row is still read on
//! every request, so a revoked token stops working at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::store::{Store, StoreError, TokenRecord};

/// The prefix every token starts with.
pub const TOKEN_PREFIX: &str = "ast_";

/// How long a verified token is remembered without hashing again.
const CACHE_TTL: Duration = Duration::from_secs(300);
/// How many verified tokens are remembered at most.
const CACHE_MAX: usize = 10_000;
/// How often `last_used_at` is written for one token.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// Who a request acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: String,
    pub org_id: i64,
    pub org_slug: String,
}

/// Why a token was refused. The message is safe to return to the client: it never contains the
/// token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing token: send `Authorization: Bearer <token>` (or ?token= for browsers)")]
    Missing,
    #[error("malformed token: expected ast_<id>_<secret>")]
    Malformed,
    #[error("unknown or wrong token")]
    Invalid,
    #[error("token revoked")]
    Revoked,
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

/// OWASP's minimum for Argon2id: 19 MiB, 2 passes, 1 lane.
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

/// Hashes a token secret as a PHC string.
pub fn hash_secret(secret: &str) -> String {
    let salt = SaltString::encode_b64(&random_bytes::<16>()).expect("16-byte salt");
    argon2().hash_password(secret.as_bytes(), &salt).expect("Argon2 hashing with valid parameters").to_string()
}

fn verify_secret(secret: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| argon2().verify_password(secret.as_bytes(), &parsed).is_ok())
}

/// Splits `ast_<id>_<secret>`.
fn split(token: &str) -> Result<(&str, &str), AuthError> {
    let rest = token.trim().strip_prefix(TOKEN_PREFIX).ok_or(AuthError::Malformed)?;
    let (id, secret) = rest.split_once('_').ok_or(AuthError::Malformed)?;
    let hex = id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex || secret.len() < 32 {
        return Err(AuthError::Malformed);
    }
    Ok((id, secret))
}

/// Creates a token for an organization. The returned [`NewToken::token`] is the only copy.
pub async fn create_token(store: &Store, org_id: i64, name: &str) -> Result<NewToken, StoreError> {
    let id: String = random_bytes::<8>().iter().map(|b| format!("{b:02x}")).collect();
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>());
    let for_hash = secret.clone();
    let hash = tokio::task::spawn_blocking(move || hash_secret(&for_hash))
        .await
        .map_err(|e| StoreError::Database(format!("hashing the token failed: {e}")))?;
    let record = store.insert_token(&id, org_id, name, &hash).await?;
    Ok(NewToken { token: format!("{TOKEN_PREFIX}{id}_{secret}"), record })
}

struct Verified {
    token_id: String,
    hash: String,
    at: Instant,
    touched: Instant,
}

/// Checks tokens against the store.
pub struct Authenticator {
    store: Store,
    cache: Mutex<HashMap<[u8; 32], Verified>>,
    /// Hash checks running at once. Each costs 19 MiB and tens of milliseconds: a burst of
    /// connections (or of wrong tokens) queues here instead of exhausting memory and CPU, and
    /// connections with the same token wait for the first check and then hit the cache.
    hashing: tokio::sync::Semaphore,
}

impl Authenticator {
    pub fn new(store: Store) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Authenticator { store, cache: Mutex::new(HashMap::new()), hashing: tokio::sync::Semaphore::new(cores) }
    }

    /// Whether this token was verified recently against this stored hash; and whether its use
    /// should be recorded.
    fn cached(&self, key: &[u8; 32], record: &TokenRecord) -> (bool, bool) {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match cache.get(key) {
            Some(v) if v.token_id == record.id && v.hash == record.secret_hash && v.at.elapsed() < CACHE_TTL => {
                (true, v.touched.elapsed() >= TOUCH_EVERY)
            }
            _ => (false, true),
        }
    }

    /// Resolves a token to its organization, or says why not.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let (id, secret) = split(token)?;
        let record = self.store.token(id).await?.ok_or(AuthError::Invalid)?;
        if record.revoked_at.is_some() {
            return Err(AuthError::Revoked);
        }
        let key: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        let (mut cached, mut touch) = self.cached(&key, &record);
        if !cached {
            let _permit = self.hashing.acquire().await.map_err(|_| AuthError::Invalid)?;
            // Another connection with this token may have verified it while this one waited.
            (cached, touch) = self.cached(&key, &record);
            if !cached {
                let (secret, hash) = (secret.to_owned(), record.secret_hash.clone());
                let ok = tokio::task::spawn_blocking(move || verify_secret(&secret, &hash)).await.unwrap_or(false);
                if !ok {
                    return Err(AuthError::Invalid);
                }
                self.remember(key, &record);
            }
        }
        if touch {
            if let Some(entry) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&key) {
                entry.touched = Instant::now();
            }
            let store = self.store.clone();
            let id = record.id.clone();
            tokio::spawn(async move {
                if let Err(e) = store.touch_token(&id).await {
                    tracing::debug!(token_id = %id, "recording token use failed: {e}");
                }
            });
        }
        Ok(Principal { token_id: record.id, org_id: record.org_id, org_slug: record.org_slug })
    }

    fn remember(&self, key: [u8; 32], record: &TokenRecord) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, v| v.at.elapsed() < CACHE_TTL);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        let now = Instant::now();
        cache.insert(
            key,
            Verified {
                token_id: record.id.clone(),
                hash: record.secret_hash.clone(),
                at: now,
                touched: now - TOUCH_EVERY,
            },
        );
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
}
