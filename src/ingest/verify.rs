//! Verification schemes: proof that a webhook comes from the PMS.
//!
//! The plugin declares the scheme; the account holds the secret; this module checks, with
//! constant-time comparisons, and never hands the secret or the proof to the plugin. An account
//! with no secret configured is not verified (its listener URL is then its only protection, and
//! the admin API says so).

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use subtle::ConstantTimeEq;

use serde::Deserialize;

use crate::plugin::bindings::stayhook::plugin::types::{HmacHeader, SignatureEncoding, VerificationScheme};
pub use crate::signature::{decode_whsec, hmac_sha256};

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
        VerificationScheme::HmacSha1Base64Body(hmac) => vec![hmac.header.to_ascii_lowercase()],
        VerificationScheme::None | VerificationScheme::BasicAuth | VerificationScheme::UrlToken(_) | VerificationScheme::Sns => Vec::new(),
    }
}

/// Whether the account holds what `scheme` needs, i.e. whether webhooks are verified at all.
pub fn is_configured(scheme: &VerificationScheme, secrets: &BTreeMap<String, String>) -> bool {
    match scheme {
        VerificationScheme::None => false,
        VerificationScheme::BasicAuth => secrets.contains_key("username") || secrets.contains_key("password"),
        // Signed with AWS's key: nothing to configure, always verified.
        VerificationScheme::Sns => true,
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
        VerificationScheme::None | VerificationScheme::Sns => false,
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
            let signature = presented_signature(presented, hmac)?;
            signature_matches(&hmac_sha256(secret.as_bytes(), &[presented.body]), hmac.encoding, signature)
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
        VerificationScheme::HmacSha1Base64Body(hmac) => {
            let signature = presented_signature(presented, hmac)?;
            signature_matches(&hmac_sha1(secret.as_bytes(), ruby_encode64(presented.body).as_bytes()), hmac.encoding, signature)
        }
        // Needs the signing certificate, which the ingest path fetches: refused here rather than
        // let through if a caller ever forgets that.
        VerificationScheme::Sns => Err(VerifyError::Malformed("an SNS message is verified with its signing certificate".into())),
    }
}

/// The signature an HMAC scheme's header presents, without its prefix.
fn presented_signature<'a>(presented: &Presented<'a>, hmac: &HmacHeader) -> Result<&'a str, VerifyError> {
    let header = (presented.header)(&hmac.header.to_ascii_lowercase()).ok_or(VerifyError::Missing("signature header"))?;
    match &hmac.prefix {
        Some(prefix) => {
            header.trim().strip_prefix(prefix.as_str()).ok_or(VerifyError::Malformed(format!("signature lacks the prefix {prefix:?}")))
        }
        None => Ok(header.trim()),
    }
}

/// Compare a presented signature with the expected MAC in the scheme's encoding (hex in either
/// case), in constant time.
fn signature_matches(expected: &[u8], encoding: SignatureEncoding, signature: &str) -> Result<(), VerifyError> {
    let matches = match encoding {
        SignatureEncoding::Hex => equal(hex::encode(expected).as_bytes(), signature.to_ascii_lowercase().as_bytes()),
        SignatureEncoding::Base64 => equal(BASE64.encode(expected).as_bytes(), signature.as_bytes()),
    };
    if matches { Ok(()) } else { Err(VerifyError::Mismatch("signature")) }
}

/// Base64 as Ruby's `Base64.encode64` writes it (RFC 2045): a line break after every 60
/// characters and after the last line; nothing for an empty input. BookingSync/Smily signs this
/// text, not the body (https://github.com/BookingSync/bookingsync-api-docs, guide
/// `webhook-subscriptions.md`).
pub fn ruby_encode64(bytes: &[u8]) -> String {
    let encoded = BASE64.encode(bytes);
    let mut wrapped = String::with_capacity(encoded.len() + encoded.len() / 60 + 1);
    for line in encoded.as_bytes().chunks(60) {
        // Base64 output is ASCII, so every chunk is valid UTF-8.
        wrapped.push_str(std::str::from_utf8(line).unwrap_or_default());
        wrapped.push('\n');
    }
    wrapped
}

/// HMAC-SHA1 of `message`.
pub fn hmac_sha1(key: &[u8], message: &[u8]) -> Vec<u8> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    ring::hmac::sign(&key, message).as_ref().to_vec()
}

/// An Amazon SNS message as SNS posts it to an HTTP(S) endpoint
/// (https://docs.aws.amazon.com/sns/latest/dg/http-subscription-confirmation-json.html and
/// https://docs.aws.amazon.com/sns/latest/dg/http-notification-json.html).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SnsMessage {
    /// `Notification`, `SubscriptionConfirmation` or `UnsubscribeConfirmation`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// Unique per published message.
    pub message_id: String,
    /// The confirmation token (confirmations only).
    #[serde(default)]
    pub token: Option<String>,
    /// The topic the message was published to.
    pub topic_arn: String,
    /// The publisher's subject (notifications, optional).
    #[serde(default)]
    pub subject: Option<String>,
    /// The payload: the PMS's body for a notification.
    pub message: String,
    /// When it was published (ISO 8601).
    pub timestamp: String,
    /// "1" (RSA with SHA1) or "2" (RSA with SHA256).
    pub signature_version: String,
    /// Base64 RSA PKCS#1 v1.5 signature of [`sns_string_to_sign`].
    pub signature: String,
    /// Where the signing certificate is; fetched only when [`sns_certificate_url_allowed`].
    #[serde(rename = "SigningCertURL")]
    pub signing_cert_url: String,
    /// Visiting it confirms the subscription (confirmations only).
    #[serde(rename = "SubscribeURL", default)]
    pub subscribe_url: Option<String>,
    /// Visiting it unsubscribes (notifications).
    #[serde(rename = "UnsubscribeURL", default)]
    pub unsubscribe_url: Option<String>,
}

/// The text SNS signs: "Name\nvalue\n" for each field of the message's type, in byte order of
/// the names (https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message-verify-message-signature.html).
pub fn sns_string_to_sign(message: &SnsMessage) -> Result<String, VerifyError> {
    let mut text = String::new();
    let mut add = |name: &str, value: &str| {
        text.push_str(name);
        text.push('\n');
        text.push_str(value);
        text.push('\n');
    };
    match message.kind.as_str() {
        "Notification" => {
            add("Message", &message.message);
            add("MessageId", &message.message_id);
            if let Some(subject) = &message.subject {
                add("Subject", subject);
            }
            add("Timestamp", &message.timestamp);
            add("TopicArn", &message.topic_arn);
            add("Type", &message.kind);
        }
        "SubscriptionConfirmation" | "UnsubscribeConfirmation" => {
            let missing = |name: &'static str| VerifyError::Malformed(format!("the SNS {} has no {name}", message.kind));
            add("Message", &message.message);
            add("MessageId", &message.message_id);
            add("SubscribeURL", message.subscribe_url.as_deref().ok_or_else(|| missing("SubscribeURL"))?);
            add("Timestamp", &message.timestamp);
            add("Token", message.token.as_deref().ok_or_else(|| missing("Token"))?);
            add("TopicArn", &message.topic_arn);
            add("Type", &message.kind);
        }
        other => return Err(VerifyError::Malformed(format!("unknown SNS message type {other:?}"))),
    }
    Ok(text)
}

/// Whether `url` is on one of `patterns` (`scheme://host[:port]`, where a `*` label of the host
/// matches one DNS label of letters, digits and '-'), with no user info. Used for
/// `SigningCertURL` (which must also end in `.pem`) and `SubscribeURL`: a URL the body names is
/// never fetched unless it is an SNS host.
pub fn sns_url_allowed(url: &str, patterns: &[String]) -> bool {
    let Ok(url) = url::Url::parse(url) else { return false };
    if !url.username().is_empty() || url.password().is_some() {
        return false;
    }
    let Some(host) = url.host_str().map(str::to_ascii_lowercase) else { return false };
    patterns.iter().any(|pattern| {
        let Some((scheme, authority)) = pattern.split_once("://") else { return false };
        let (host_pattern, port) = match authority.rsplit_once(':') {
            Some((host_pattern, port)) => (host_pattern, port.parse::<u16>().ok()),
            None => (authority, None),
        };
        let port_matches = match port {
            Some(port) => url.port_or_known_default() == Some(port),
            None => url.port().is_none(),
        };
        let host_labels: Vec<&str> = host.split('.').collect();
        let pattern_labels: Vec<&str> = host_pattern.split('.').collect();
        url.scheme().eq_ignore_ascii_case(scheme)
            && port_matches
            && host_labels.len() == pattern_labels.len()
            && host_labels.iter().zip(&pattern_labels).all(|(label, wanted)| {
                if *wanted == "*" {
                    !label.is_empty() && label.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
                } else {
                    label.eq_ignore_ascii_case(wanted)
                }
            })
    })
}

/// Whether SNS's `SigningCertURL` may be fetched: on an allowed host and a `.pem` file.
pub fn sns_certificate_url_allowed(url: &str, patterns: &[String]) -> bool {
    sns_url_allowed(url, patterns) && url::Url::parse(url).is_ok_and(|url| url.query().is_none() && url.path().ends_with(".pem"))
}

/// RSA PKCS#1 v1.5 with SHA1 for SNS SignatureVersion 1, which webpki (rightly) does not offer
/// for certificates; ring keeps it for legacy use like this one.
#[derive(Debug)]
struct RsaPkcs1Sha1;

impl rustls_pki_types::SignatureVerificationAlgorithm for RsaPkcs1Sha1 {
    fn verify_signature(&self, public_key: &[u8], message: &[u8], signature: &[u8]) -> Result<(), rustls_pki_types::InvalidSignature> {
        ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY, public_key)
            .verify(message, signature)
            .map_err(|_| rustls_pki_types::InvalidSignature)
    }

    fn public_key_alg_id(&self) -> rustls_pki_types::AlgorithmIdentifier {
        rustls_pki_types::alg_id::RSA_ENCRYPTION
    }

    fn signature_alg_id(&self) -> rustls_pki_types::AlgorithmIdentifier {
        // Only used to match certificate signatures in a chain, which this type never checks.
        rustls_pki_types::alg_id::RSA_PKCS1_SHA256
    }
}

/// Check an SNS message's signature with the signing certificate (PEM, as SNS serves it; DER
/// accepted too). The certificate's own chain is not walked: it was fetched over HTTPS from an
/// SNS host, which is what AWS's own SDK verifiers rely on.
pub fn verify_sns(message: &SnsMessage, certificate: &[u8]) -> Result<(), VerifyError> {
    use rustls_pki_types::pem::PemObject;
    let text = sns_string_to_sign(message)?;
    let signature =
        BASE64.decode(message.signature.trim()).map_err(|_| VerifyError::Malformed("the SNS Signature is not base64".into()))?;
    let der = match rustls_pki_types::CertificateDer::from_pem_slice(certificate) {
        Ok(der) => der,
        Err(_) => rustls_pki_types::CertificateDer::from(certificate.to_vec()),
    };
    let certificate = webpki::EndEntityCert::try_from(&der)
        .map_err(|error| VerifyError::Malformed(format!("the SNS signing certificate is not usable: {error}")))?;
    let algorithm: &dyn rustls_pki_types::SignatureVerificationAlgorithm = match message.signature_version.as_str() {
        "1" => &RsaPkcs1Sha1,
        "2" => webpki::ring::RSA_PKCS1_2048_8192_SHA256,
        other => return Err(VerifyError::Malformed(format!("unknown SNS SignatureVersion {other:?}"))),
    };
    certificate.verify_signature(algorithm, text.as_bytes(), &signature).map_err(|_| VerifyError::Mismatch("SNS signature"))
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

fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body shaped like Smily's booking webhook (guide `webhook-subscriptions.md` of
    /// https://github.com/BookingSync/bookingsync-api-docs), 167 bytes: its Base64 spans four lines.
    const SMILY_BODY: &[u8] = br#"{"account_id":1,"event":"booking_updated","resource":{"bookings":[{"id":7,"start_at":"2024-08-21T16:00:00Z","end_at":"2024-08-25T10:00:00Z","status":"Booked"}]}}"#;

    #[test]
    fn ruby_base64_wraps_every_60_characters_and_ends_with_a_newline() {
        // Vectors from Ruby's documentation of Base64.encode64 and from coreutils `base64 -w 60`.
        assert_eq!(ruby_encode64(b""), "");
        assert_eq!(
            ruby_encode64(b"Now is the time for all good coders\nto learn Ruby"),
            "Tm93IGlzIHRoZSB0aW1lIGZvciBhbGwgZ29vZCBjb2RlcnMKdG8gbGVhcm4g\nUnVieQ==\n"
        );
        let wrapped = ruby_encode64(SMILY_BODY);
        assert!(wrapped.lines().all(|line| line.len() <= 60) && wrapped.ends_with('\n'));
        assert_eq!(wrapped.lines().count(), 4);
    }

    #[test]
    fn hmac_sha1_over_the_base64_of_the_body_like_smily() {
        // Expected value computed independently with coreutils and OpenSSL:
        //   base64 -w 60 body.json | openssl dgst -sha1 -hmac smily-secret
        let expected = "63fcb3fe85e4f901637580456600b008d53424db";
        let scheme = VerificationScheme::HmacSha1Base64Body(HmacHeader {
            header: "x-content-signature".into(),
            encoding: SignatureEncoding::Hex,
            prefix: None,
        });
        let secrets = [("secret", "smily-secret")];
        assert_eq!(check(&scheme, &secrets, &[("x-content-signature", expected)], &[], SMILY_BODY), Ok(()));
        assert_eq!(check(&scheme, &secrets, &[("x-content-signature", &expected.to_uppercase())], &[], SMILY_BODY), Ok(()));
        // The HMAC of the raw body (no Base64) is not accepted, nor the right one for another body.
        let over_raw = hex::encode(hmac_sha1(b"smily-secret", SMILY_BODY));
        assert_eq!(
            check(&scheme, &secrets, &[("x-content-signature", &over_raw)], &[], SMILY_BODY),
            Err(VerifyError::Mismatch("signature"))
        );
        assert_eq!(
            check(&scheme, &secrets, &[("x-content-signature", expected)], &[], &SMILY_BODY[..100]),
            Err(VerifyError::Mismatch("signature"))
        );
        assert_eq!(check(&scheme, &secrets, &[], &[], SMILY_BODY), Err(VerifyError::Missing("signature header")));
        assert!(check(&scheme, &[("secret", "")], &[("x-content-signature", expected)], &[], SMILY_BODY).is_err());
    }

    /// Smily publishes no test vector (its guide gives the Ruby code only), so this one was
    /// computed independently: a 45-byte body, whose Base64 is exactly one 60-character line, so
    /// Ruby's `Base64.encode64` ends it with a single `\n` (no empty second line):
    ///   printf '%s' BODY | base64 -w 60 | openssl dgst -sha1 -hmac smily-secret
    #[test]
    fn smily_signature_of_a_body_whose_base64_is_exactly_one_line() {
        let body = br#"{"account_id":12,"event":"booking_destroyed"}"#;
        assert_eq!(body.len(), 45);
        assert_eq!(ruby_encode64(body), "eyJhY2NvdW50X2lkIjoxMiwiZXZlbnQiOiJib29raW5nX2Rlc3Ryb3llZCJ9\n");
        let scheme = VerificationScheme::HmacSha1Base64Body(HmacHeader {
            header: "X-Content-Signature".into(),
            encoding: SignatureEncoding::Hex,
            prefix: None,
        });
        let secrets = [("secret", "smily-secret")];
        let expected = "84a5b6707920c93b840f0b85d931f52eb9b20977";
        assert_eq!(check(&scheme, &secrets, &[("x-content-signature", expected)], &[], body), Ok(()));
        // The same HMAC over a Base64 with two line breaks, or none, is another signature.
        let doubled = hex::encode(hmac_sha1(b"smily-secret", format!("{}\n", ruby_encode64(body)).as_bytes()));
        let bare = hex::encode(hmac_sha1(b"smily-secret", ruby_encode64(body).trim_end().as_bytes()));
        for wrong in [doubled, bare] {
            assert_ne!(wrong, expected);
            assert_eq!(check(&scheme, &secrets, &[("x-content-signature", &wrong)], &[], body), Err(VerifyError::Mismatch("signature")));
        }
    }

    /// SNS vectors made with OpenSSL (AWS publishes no vector whose certificate stays online):
    /// `openssl req -x509 -newkey rsa:2048` gave `testdata/sns-test-cert.pem`, and
    /// `openssl dgst -sha1|-sha256 -sign key.pem string-to-sign.txt | base64` the two signatures,
    /// over the string to sign of [`sns_notification`] (AWS's example notification).
    fn sns_notification(version: &str) -> SnsMessage {
        let signature = match version {
            "1" => include_str!("testdata/sig-v1.txt"),
            _ => include_str!("testdata/sig-v2.txt"),
        };
        SnsMessage {
            kind: "Notification".into(),
            message_id: "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324".into(),
            token: None,
            topic_arn: "arn:aws:sns:us-west-2:123456789012:MyTopic".into(),
            subject: Some("My First Message".into()),
            message: "Hello from SNS".into(),
            timestamp: "2012-05-02T00:54:06.655Z".into(),
            signature_version: version.into(),
            signature: signature.trim().into(),
            signing_cert_url: "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem".into(),
            subscribe_url: None,
            unsubscribe_url: None,
        }
    }

    const SNS_TEST_CERT: &[u8] = include_bytes!("testdata/sns-test-cert.pem");

    #[test]
    fn sns_signature_versions_1_and_2_verify_and_a_changed_field_does_not() {
        assert_eq!(verify_sns(&sns_notification("1"), SNS_TEST_CERT), Ok(()));
        assert_eq!(verify_sns(&sns_notification("2"), SNS_TEST_CERT), Ok(()));
        let mut tampered = sns_notification("2");
        tampered.message = "Hello from someone else".into();
        assert_eq!(verify_sns(&tampered, SNS_TEST_CERT), Err(VerifyError::Mismatch("SNS signature")));
        let mut swapped = sns_notification("1");
        swapped.signature_version = "2".into();
        assert_eq!(verify_sns(&swapped, SNS_TEST_CERT), Err(VerifyError::Mismatch("SNS signature")));
        let mut unknown = sns_notification("1");
        unknown.signature_version = "3".into();
        assert!(matches!(verify_sns(&unknown, SNS_TEST_CERT), Err(VerifyError::Malformed(_))));
        assert!(matches!(verify_sns(&sns_notification("1"), b"not a certificate"), Err(VerifyError::Malformed(_))));
    }

    #[test]
    fn sns_string_to_sign_follows_the_aws_field_order() {
        let text = sns_string_to_sign(&sns_notification("1")).expect("a notification");
        assert_eq!(text, include_str!("testdata/sns-string-to-sign.txt"));
        let mut confirmation = sns_notification("1");
        confirmation.kind = "SubscriptionConfirmation".into();
        assert!(matches!(sns_string_to_sign(&confirmation), Err(VerifyError::Malformed(_))), "no Token, no SubscribeURL");
        confirmation.token = Some("t0k3n".into());
        confirmation.subscribe_url = Some("https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription".into());
        let text = sns_string_to_sign(&confirmation).expect("a confirmation");
        assert!(text.contains("SubscribeURL\nhttps://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription\nTimestamp\n"));
        assert!(text.contains("Token\nt0k3n\nTopicArn\n"));
    }

    #[test]
    fn sns_certificates_come_only_from_sns_hosts() {
        let aws: Vec<String> = crate::config::DEFAULT_SNS_CERTIFICATE_HOSTS.iter().map(|host| host.to_string()).collect();
        let allowed = |url: &str| sns_certificate_url_allowed(url, &aws);
        assert!(allowed("https://sns.us-west-2.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem"));
        assert!(allowed("https://sns.eu-central-1.amazonaws.com/SimpleNotificationService-abc.pem"));
        for refused in [
            "http://sns.us-west-2.amazonaws.com/cert.pem",
            "https://sns.us-west-2.amazonaws.com.evil.example/cert.pem",
            "https://evil.example/sns.us-west-2.amazonaws.com/cert.pem",
            "https://sns.amazonaws.com/cert.pem",
            "https://sns.a.b.amazonaws.com/cert.pem",
            "https://user@sns.us-west-2.amazonaws.com/cert.pem",
            "https://sns.us-west-2.amazonaws.com:8443/cert.pem",
            "https://sns.us-west-2.amazonaws.com/cert.txt",
            "https://sns.us-west-2.amazonaws.com/cert.pem?x=1",
            "https://sqs.us-west-2.amazonaws.com/cert.pem",
            "not a url",
        ] {
            assert!(!allowed(refused), "{refused}");
        }
        let local = vec!["http://127.0.0.1:4567".to_string()];
        assert!(sns_certificate_url_allowed("http://127.0.0.1:4567/cert.pem", &local));
        assert!(!sns_certificate_url_allowed("http://127.0.0.1:4568/cert.pem", &local));
        assert!(sns_url_allowed("https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&Token=x", &aws));
    }

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
