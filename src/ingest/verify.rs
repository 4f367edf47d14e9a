//! Verification schemes: proof that a webhook comes from the PMS.
//!
//! The plugin declares the scheme; the account holds the secret; this module checks, with
//! constant-time comparisons, and never hands the secret or the proof to the plugin. An account
//! with no secret configured is not verified (its listener URL is then its only protection, and
//! the admin API says so).

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::plugin::bindings::stayhook::plugin::types::{SignatureEncoding, VerificationScheme};

/// Largest clock difference accepted for Standard Webhooks timestamps.
const TIMESTAMP_TOLERANCE_SECS: u64 = 5 * 60;

/// Why a webhook failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The proof the scheme needs is absent.
    #[error("missing {0}")]
    Missing(&'static str),
    /// The proof is there and wrong.
    #[error("{0} does not match")]
    Mismatch(&'static str),
    /// The proof is malformed or stale.
    #[error("{0}")]
    Malformed(String),
}

/// What a request offers for verification.
pub struct Presented<'a> {
    /// Header lookup (lower-case names).
    pub header: &'a dyn Fn(&str) -> Option<&'a str>,
    /// Query parameters.
    pub query: &'a [(String, String)],
    /// The raw body.
    pub body: &'a [u8],
    /// Unix seconds now.
    pub now_secs: i64,
}

/// Headers (lower case) a scheme reads; they are withheld from the plugin.
pub fn scheme_headers(scheme: &VerificationScheme) -> Vec<String> {
    match scheme {
        VerificationScheme::HmacSha256(hmac) => vec![hmac.header.to_ascii_lowercase()],
        VerificationScheme::StandardWebhooks => {
            ["webhook-id", "webhook-timestamp", "webhook-signature", "svix-id", "svix-timestamp", "svix-signature"]
                .map(String::from)
                .to_vec()
        }
        VerificationScheme::HeaderToken(name) => vec![name.to_ascii_lowercase()],
        VerificationScheme::None | VerificationScheme::BasicAuth | VerificationScheme::UrlToken(_) => Vec::new(),
    }
}

/// Whether the account holds what `scheme` needs, i.e. whether webhooks are verified at all.
pub fn is_configured(scheme: &VerificationScheme, secrets: &BTreeMap<String, String>) -> bool {
    match scheme {
        VerificationScheme::None => false,
        VerificationScheme::BasicAuth => secrets.contains_key("username") || secrets.contains_key("password"),
        _ => secrets.contains_key("secret"),
    }
}

/// Check a request against the account's secrets. `Ok` when verified or not configured.
pub fn verify(scheme: &VerificationScheme, secrets: &BTreeMap<String, String>, presented: &Presented<'_>) -> Result<(), VerifyError> {
    if !is_configured(scheme, secrets) {
        return Ok(());
    }
    let secret = secrets.get("secret").map(String::as_str).unwrap_or_default();
    // A secret that is configured but empty would let anyone compute the proof: refuse, whatever
    // the admin API let through.
    let empty = match scheme {
        VerificationScheme::None => false,
        VerificationScheme::BasicAuth => secrets.get("password").is_none_or(|password| password.trim().is_empty()),
        VerificationScheme::StandardWebhooks => decode_whsec(secret).is_none_or(|key| key.is_empty()),
        _ => secret.trim().is_empty(),
    };
    if empty {
        return Err(VerifyError::Malformed("the account's verification secret is empty; set a real one".into()));
    }
    match scheme {
        VerificationScheme::None => Ok(()),
        VerificationScheme::BasicAuth => verify_basic(secrets, presented),
        VerificationScheme::HmacSha256(hmac) => {
            let header = (presented.header)(&hmac.header.to_ascii_lowercase()).ok_or(VerifyError::Missing("signature header"))?;
            let signature = match &hmac.prefix {
                Some(prefix) => header
                    .trim()
                    .strip_prefix(prefix.as_str())
                    .ok_or(VerifyError::Malformed(format!("signature lacks the prefix {prefix:?}")))?,
                None => header.trim(),
            };
            let expected = hmac_sha256(secret.as_bytes(), &[presented.body]);
            let expected = match hmac.encoding {
                SignatureEncoding::Hex => hex::encode(expected),
                SignatureEncoding::Base64 => BASE64.encode(expected),
            };
            let matches = if matches!(hmac.encoding, SignatureEncoding::Hex) {
                equal(expected.as_bytes(), signature.to_ascii_lowercase().as_bytes())
            } else {
                equal(expected.as_bytes(), signature.as_bytes())
            };
            if matches { Ok(()) } else { Err(VerifyError::Mismatch("signature")) }
        }
        VerificationScheme::StandardWebhooks => verify_standard_webhooks(secret, presented),
        VerificationScheme::UrlToken(parameter) => {
            let token = presented
                .query
                .iter()
                .find(|(name, _)| name == parameter)
                .map(|(_, value)| value.as_str())
                .ok_or(VerifyError::Missing("token query parameter"))?;
            if equal(token.as_bytes(), secret.as_bytes()) { Ok(()) } else { Err(VerifyError::Mismatch("token")) }
        }
        VerificationScheme::HeaderToken(name) => {
            let token = (presented.header)(&name.to_ascii_lowercase()).ok_or(VerifyError::Missing("token header"))?;
            if equal(token.trim().as_bytes(), secret.as_bytes()) { Ok(()) } else { Err(VerifyError::Mismatch("token")) }
        }
    }
}

fn verify_basic(secrets: &BTreeMap<String, String>, presented: &Presented<'_>) -> Result<(), VerifyError> {
    let header = (presented.header)("authorization").ok_or(VerifyError::Missing("basic authorization"))?;
    let encoded = header
        .trim()
        .strip_prefix("Basic ")
        .or_else(|| header.trim().strip_prefix("basic "))
        .ok_or(VerifyError::Malformed("authorization is not Basic".into()))?;
    let decoded = BASE64.decode(encoded.trim()).map_err(|_| VerifyError::Malformed("basic credentials are not base64".into()))?;
    let username = secrets.get("username").map(String::as_str).unwrap_or_default();
    let password = secrets.get("password").map(String::as_str).unwrap_or_default();
    let expected = format!("{username}:{password}");
    if equal(&decoded, expected.as_bytes()) { Ok(()) } else { Err(VerifyError::Mismatch("basic credentials")) }
}

fn verify_standard_webhooks(secret: &str, presented: &Presented<'_>) -> Result<(), VerifyError> {
    let header = |webhook: &str, svix: &str| (presented.header)(webhook).or_else(|| (presented.header)(svix));
    let id = header("webhook-id", "svix-id").ok_or(VerifyError::Missing("webhook-id"))?;
    let timestamp = header("webhook-timestamp", "svix-timestamp").ok_or(VerifyError::Missing("webhook-timestamp"))?;
    let signatures = header("webhook-signature", "svix-signature").ok_or(VerifyError::Missing("webhook-signature"))?;
    let sent_secs: i64 = timestamp.trim().parse().map_err(|_| VerifyError::Malformed("webhook-timestamp is not a number".into()))?;
    // abs_diff: `now - sent` overflows for timestamps near i64::MIN and wrapped into the window.
    if presented.now_secs.abs_diff(sent_secs) > TIMESTAMP_TOLERANCE_SECS {
        return Err(VerifyError::Malformed("webhook-timestamp is more than 5 minutes off".into()));
    }
    let key = decode_whsec(secret).ok_or(VerifyError::Malformed("the account's secret is not a whsec_ base64 key".into()))?;
    let expected = BASE64.encode(hmac_sha256(&key, &[id.as_bytes(), b".", timestamp.trim().as_bytes(), b".", presented.body]));
    let matched = signatures
        .split_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .any(|signature| equal(signature.as_bytes(), expected.as_bytes()));
    if matched { Ok(()) } else { Err(VerifyError::Mismatch("webhook-signature")) }
}

/// The key bytes of a `whsec_` secret.
pub fn decode_whsec(secret: &str) -> Option<Vec<u8>> {
    BASE64.decode(secret.strip_prefix("whsec_").unwrap_or(secret)).ok()
}

/// HMAC-SHA256 of the concatenated parts.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::bindings::stayhook::plugin::types::HmacHeader;

    fn check(
        scheme: &VerificationScheme,
        secrets: &[(&str, &str)],
        headers: &[(&str, &str)],
        query: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), VerifyError> {
        let secrets = secrets.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let headers: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let query: Vec<(String, String)> = query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let lookup = |name: &str| headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str());
        verify(scheme, &secrets, &Presented { header: &lookup, query: &query, body, now_secs: 1_700_000_000 })
    }

    #[test]
    fn basic_auth_accepts_the_pair_and_refuses_others() {
        let good = format!("Basic {}", BASE64.encode("hostaway:s3cret"));
        let bad = format!("Basic {}", BASE64.encode("hostaway:wrong"));
        let secrets = [("username", "hostaway"), ("password", "s3cret")];
        assert_eq!(check(&VerificationScheme::BasicAuth, &secrets, &[("authorization", &good)], &[], b"{}"), Ok(()));
        assert_eq!(
            check(&VerificationScheme::BasicAuth, &secrets, &[("authorization", &bad)], &[], b"{}"),
            Err(VerifyError::Mismatch("basic credentials"))
        );
        assert_eq!(check(&VerificationScheme::BasicAuth, &secrets, &[], &[], b"{}"), Err(VerifyError::Missing("basic authorization")));
        assert_eq!(check(&VerificationScheme::BasicAuth, &[], &[], &[], b"{}"), Ok(()), "unconfigured accounts are not verified");
    }

    #[test]
    fn hmac_hex_with_prefix_like_lodgify() {
        let scheme = VerificationScheme::HmacSha256(HmacHeader {
            header: "ms-signature".into(),
            encoding: SignatureEncoding::Hex,
            prefix: Some("sha256=".into()),
        });
        let body = br#"{"action":"rate_change"}"#;
        let signature = format!("sha256={}", hex::encode(hmac_sha256(b"topsecret", &[body])));
        assert_eq!(check(&scheme, &[("secret", "topsecret")], &[("ms-signature", &signature)], &[], body), Ok(()));
        assert!(check(&scheme, &[("secret", "topsecret")], &[("ms-signature", &signature)], &[], b"{}").is_err());
    }

    #[test]
    fn standard_webhooks_signature_and_staleness() {
        let secret = format!("whsec_{}", BASE64.encode(b"0123456789abcdef0123456789abcdef"));
        let body = br#"{"event":"reservation.updated.v2"}"#;
        let signature = BASE64.encode(hmac_sha256(b"0123456789abcdef0123456789abcdef", &[b"msg_1.1700000000.", body]));
        let headers = [("svix-id", "msg_1"), ("svix-timestamp", "1700000000"), ("svix-signature", &format!("v1,bogus v1,{signature}"))];
        assert_eq!(check(&VerificationScheme::StandardWebhooks, &[("secret", &secret)], &headers, &[], body), Ok(()));
        let stale = [("svix-id", "msg_1"), ("svix-timestamp", "1699990000"), ("svix-signature", &format!("v1,{signature}"))];
        assert!(matches!(
            check(&VerificationScheme::StandardWebhooks, &[("secret", &secret)], &stale, &[], body),
            Err(VerifyError::Malformed(_))
        ));
    }

    fn standard_webhooks_at(timestamp: &str) -> Result<(), VerifyError> {
        let key = b"0123456789abcdef0123456789abcdef";
        let secret = format!("whsec_{}", BASE64.encode(key));
        let body = br#"{"event":"reservation.updated.v2"}"#;
        let signed = format!("msg_1.{timestamp}.");
        let signature = format!("v1,{}", BASE64.encode(hmac_sha256(key, &[signed.as_bytes(), body])));
        let headers = [("webhook-id", "msg_1"), ("webhook-timestamp", timestamp), ("webhook-signature", signature.as_str())];
        check(&VerificationScheme::StandardWebhooks, &[("secret", &secret)], &headers, &[], body)
    }

    #[test]
    fn standard_webhooks_extreme_timestamps_are_refused() {
        // `now - 2^63` made `now - sent` overflow into the tolerance window (issue 10).
        let now: i64 = 1_700_000_000;
        let wrapping = now.wrapping_sub(i64::MIN).to_string();
        let near_min = (now - i64::MAX).to_string();
        for timestamp in [
            i64::MIN.to_string(),
            i64::MAX.to_string(),
            (i64::MIN + 1).to_string(),
            wrapping,
            near_min,
            "-1".to_string(),
            "0".to_string(),
            "-1700000000".to_string(),
            "99999999999999999999999999".to_string(),
            "-99999999999999999999999999".to_string(),
            "1700000000.5".to_string(),
            "".to_string(),
        ] {
            assert!(
                matches!(standard_webhooks_at(&timestamp), Err(VerifyError::Malformed(_))),
                "timestamp {timestamp:?}: {:?}",
                standard_webhooks_at(&timestamp)
            );
        }
        assert_eq!(standard_webhooks_at("1700000000"), Ok(()));
        assert_eq!(standard_webhooks_at("1700000300"), Ok(()), "the edge of the window");
        assert!(standard_webhooks_at("1700000301").is_err());
        assert!(standard_webhooks_at("1699999699").is_err());
    }

    #[test]
    fn an_empty_configured_secret_verifies_nothing() {
        let hmac = VerificationScheme::HmacSha256(HmacHeader { header: "x-sig".into(), encoding: SignatureEncoding::Hex, prefix: None });
        let forged = hex::encode(hmac_sha256(b"", &[b"{}"]));
        assert!(check(&hmac, &[("secret", "")], &[("x-sig", &forged)], &[], b"{}").is_err());
        let url = VerificationScheme::UrlToken("token".into());
        assert!(check(&url, &[("secret", "")], &[], &[("token", "")], b"").is_err());
        assert!(check(&url, &[("secret", "  ")], &[], &[("token", "  ")], b"").is_err());
        let header = VerificationScheme::HeaderToken("x-token".into());
        assert!(check(&header, &[("secret", "")], &[("x-token", "")], &[], b"").is_err());
        let basic = format!("Basic {}", BASE64.encode("user:"));
        assert!(check(&VerificationScheme::BasicAuth, &[("username", "user")], &[("authorization", &basic)], &[], b"").is_err());
        assert!(
            check(&VerificationScheme::BasicAuth, &[("username", "user"), ("password", "")], &[("authorization", &basic)], &[], b"")
                .is_err()
        );
        for secret in ["", "whsec_", "whsec_!!!"] {
            let signature = BASE64.encode(hmac_sha256(b"", &[b"msg_1.1700000000.{}"]));
            let headers = [("webhook-id", "msg_1"), ("webhook-timestamp", "1700000000"), ("webhook-signature", &format!("v1,{signature}"))];
            assert!(check(&VerificationScheme::StandardWebhooks, &[("secret", secret)], &headers, &[], b"{}").is_err(), "{secret:?}");
        }
    }

    #[test]
    fn url_token() {
        let scheme = VerificationScheme::UrlToken("token".into());
        assert_eq!(check(&scheme, &[("secret", "abc")], &[], &[("token", "abc")], b""), Ok(()));
        assert_eq!(check(&scheme, &[("secret", "abc")], &[], &[("token", "abd")], b""), Err(VerifyError::Mismatch("token")));
    }
}
