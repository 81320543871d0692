//! The one signature scheme of asterai's outgoing requests (agents' HTTP tools and webhooks):
//!
//! ```text
//! X-Asterai-Timestamp: 1764583200
//! X-Asterai-Signature: v1=<hex HMAC-SHA-256(secret, "1764583200." + body)>
//! ```
//!
//! A receiver recomputes the HMAC over the timestamp, a `.` and the raw body, compares in
//! constant time, and refuses timestamps more than a few minutes old (replays).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The signature header: `v1=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-asterai-signature";
/// The Unix time (seconds) the signature covers.
pub const TIMESTAMP_HEADER: &str = "x-asterai-timestamp";

/// `v1=<hex HMAC-SHA-256(secret, "<timestamp>.<body>")>`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(3 + digest.len() * 2);
    out.push_str("v1=");
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// The two headers of a request signed at `timestamp`: `(name, value)` pairs.
pub fn signed_headers(secret: &[u8], timestamp: i64, body: &[u8]) -> [(&'static str, String); 2] {
    [(TIMESTAMP_HEADER, timestamp.to_string()), (SIGNATURE_HEADER, sign(secret, timestamp, body))]
}

/// Whether `signature` is the one of `body` at `timestamp` (constant-time comparison): what a
/// receiver checks, and what asterai's tests check.
pub fn verify(secret: &[u8], timestamp: i64, body: &[u8], signature: &str) -> bool {
    let Some(hex) = signature.strip_prefix("v1=") else { return false };
    let Some(expected) = decode_hex(hex) else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_the_timestamp_and_the_body() {
        // RFC 4231 test case 2's key, over "<timestamp>.<body>".
        let a = sign(b"Jefe", 1_764_583_200, b"{\"a\":1}");
        assert!(a.starts_with("v1=") && a.len() == 3 + 64);
        assert_ne!(a, sign(b"Jefe", 1_764_583_201, b"{\"a\":1}"));
        assert_ne!(a, sign(b"Jefe", 1_764_583_200, b"{\"a\":2}"));
        assert_ne!(a, sign(b"jefe", 1_764_583_200, b"{\"a\":1}"));
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"1764583200.{\"a\":1}");
        let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(a, format!("v1={hex}"));
        assert!(verify(b"Jefe", 1_764_583_200, b"{\"a\":1}", &a));
        assert!(!verify(b"Jefe", 1_764_583_201, b"{\"a\":1}", &a));
        assert!(!verify(b"Jefe", 1_764_583_200, b"{\"a\":1}", "v1=zz"));
        assert!(!verify(b"Jefe", 1_764_583_200, b"{\"a\":1}", &a[3..]));
        let [(t, tv), (s, sv)] = signed_headers(b"Jefe", 1_764_583_200, b"{\"a\":1}");
        assert_eq!((t, tv.as_str(), s, sv.as_str()), (TIMESTAMP_HEADER, "1764583200", SIGNATURE_HEADER, a.as_str()));
    }
}
