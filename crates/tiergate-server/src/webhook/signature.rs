//! `X-Hub-Signature-256`: `sha256=` and the hex HMAC-SHA256 of the raw body, keyed with the app
//! secret. Compared in constant time by the `hmac` crate.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Whether `header` is the signature of `body` under `secret`.
pub fn verify(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// The header value for `body` (tests and tools that sign payloads).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let h = sign(b"k", b"body");
        assert!(verify(b"k", b"body", Some(&h)));
        assert!(!verify(b"k", b"body!", Some(&h)));
        assert!(!verify(b"other", b"body", Some(&h)));
        assert!(!verify(b"k", b"body", None));
        assert!(!verify(b"k", b"body", Some("sha256=zz")));
        assert!(!verify(b"k", b"body", Some(&h.replace("sha256=", "sha1="))));
    }
}
