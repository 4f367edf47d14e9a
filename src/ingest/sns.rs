//! Amazon SNS deliveries (the `sns` verification scheme, contract v0.2): verify the message with
//! its signing certificate, answer the subscription handshake, unwrap a notification for the
//! plugin.
//!
//! Certificates are fetched only from a URL [`verify::sns_certificate_url_allowed`] accepts (https on
//! `sns.<region>.amazonaws.com` by default, the setting `sns_certificate_hosts`), without following
//! redirects, at most 64 KiB, and cached by URL for the daemon's life (SNS rotates them by
//! publishing a new URL). A `SubscriptionConfirmation` whose signature checks out (and whose topic
//! is the account's `topicArn`, when set) is confirmed by the host with one GET of its
//! `SubscribeURL`, again only on an allowed SNS host: the operator subscribed this endpoint to
//! the topic, and SNS delivers nothing until the subscription is confirmed. An
//! `UnsubscribeConfirmation` is acknowledged and logged. Neither reaches the plugin or the inbox.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::verify::{self, SnsMessage};
use crate::http::ApiError;

/// Largest certificate accepted.
const MAX_CERTIFICATE_BYTES: usize = 64 * 1024;
/// Certificates kept; the cache is cleared when full (SNS uses a handful of URLs).
const MAX_CACHED_CERTIFICATES: usize = 64;

/// What an SNS delivery turned out to be.
pub(crate) enum SnsDelivery {
    /// Answered here (a confirmation): send this response, store nothing.
    Answered(Response),
    /// A verified notification: the `Message` as the body, and the envelope's fields as headers.
    Notification { body: bytes::Bytes, headers: HeaderMap },
}

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new())
    })
}

fn cache() -> &'static Mutex<HashMap<String, Arc<Vec<u8>>>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Vec<u8>>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

fn refused(message: String) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "verification_failed", format!("webhook verification failed: {message}"))
}

async fn certificate(url: &str) -> Result<Arc<Vec<u8>>, ApiError> {
    if let Some(cached) = cache().lock().expect("SNS certificate cache poisoned").get(url).cloned() {
        return Ok(cached);
    }
    let unavailable = |reason: String| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "sns_certificate_unavailable",
            format!("the SNS signing certificate could not be fetched: {reason}"),
        )
    };
    let mut response = client().get(url).send().await.map_err(|error| unavailable(error.to_string()))?;
    if !response.status().is_success() {
        return Err(unavailable(format!("HTTP {}", response.status().as_u16())));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|error| unavailable(error.to_string()))? {
        if bytes.len() + chunk.len() > MAX_CERTIFICATE_BYTES {
            return Err(unavailable(format!("larger than {MAX_CERTIFICATE_BYTES} bytes")));
        }
        bytes.extend_from_slice(&chunk);
    }
    let certificate = Arc::new(bytes);
    let mut cache = cache().lock().expect("SNS certificate cache poisoned");
    if cache.len() >= MAX_CACHED_CERTIFICATES {
        cache.clear();
    }
    cache.insert(url.to_string(), certificate.clone());
    Ok(certificate)
}

/// Verify an SNS delivery and decide what it is. `hosts` are the allowed certificate hosts,
/// `topic_arn` the account's pinned topic.
pub(crate) async fn receive(body: &[u8], hosts: &[String], topic_arn: Option<&str>) -> Result<SnsDelivery, ApiError> {
    let message: SnsMessage =
        serde_json::from_slice(body).map_err(|error| refused(format!("the body is not an Amazon SNS message: {error}")))?;
    if !verify::sns_certificate_url_allowed(&message.signing_cert_url, hosts) {
        return Err(refused(format!("SigningCertURL {:?} is not an SNS certificate URL", message.signing_cert_url)));
    }
    if let Some(expected) = topic_arn
        && expected != message.topic_arn
    {
        return Err(refused(format!("TopicArn {:?} is not the account's topic", message.topic_arn)));
    }
    let certificate = certificate(&message.signing_cert_url).await?;
    verify::verify_sns(&message, &certificate).map_err(|error| refused(error.to_string()))?;
    match message.kind.as_str() {
        "Notification" => {
            let mut headers = HeaderMap::new();
            let mut put = |name: &'static str, value: &str| {
                if let Ok(value) = HeaderValue::from_str(value) {
                    headers.insert(HeaderName::from_static(name), value);
                }
            };
            put("x-stayhook-sns-message-id", &message.message_id);
            put("x-stayhook-sns-topic-arn", &message.topic_arn);
            put("x-stayhook-sns-timestamp", &message.timestamp);
            if let Some(subject) = &message.subject {
                put("x-stayhook-sns-subject", subject);
            }
            let is_json = serde_json::from_str::<serde::de::IgnoredAny>(&message.message).is_ok();
            put("content-type", if is_json { "application/json" } else { "text/plain" });
            Ok(SnsDelivery::Notification { body: bytes::Bytes::from(message.message.into_bytes()), headers })
        }
        "SubscriptionConfirmation" => {
            let url = message.subscribe_url.as_deref().unwrap_or_default();
            if !verify::sns_url_allowed(url, hosts) {
                return Err(ApiError::unprocessable(
                    "sns_subscribe_url_refused",
                    format!("SubscribeURL {url:?} is not on an SNS host; not visited"),
                ));
            }
            let confirmed = client().get(url).send().await.map(|response| response.status());
            match confirmed {
                Ok(status) if status.is_success() => {
                    tracing::info!(topic = %message.topic_arn, "confirmed the SNS subscription");
                    Ok(SnsDelivery::Answered((StatusCode::OK, axum::Json(json!({"status": "sns-subscription-confirmed"}))).into_response()))
                }
                outcome => {
                    let reason = match outcome {
                        Ok(status) => format!("HTTP {}", status.as_u16()),
                        Err(error) => error.to_string(),
                    };
                    tracing::warn!(topic = %message.topic_arn, %reason, subscribe_url = url, "could not confirm the SNS subscription; visit the SubscribeURL by hand");
                    Err(ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "sns_confirmation_failed",
                        format!("confirming the SNS subscription failed: {reason}"),
                    ))
                }
            }
        }
        "UnsubscribeConfirmation" => {
            tracing::warn!(topic = %message.topic_arn, "the SNS topic unsubscribed this endpoint");
            Ok(SnsDelivery::Answered((StatusCode::OK, axum::Json(json!({"status": "sns-unsubscribe-noted"}))).into_response()))
        }
        other => Err(refused(format!("unknown SNS message type {other:?}"))),
    }
}
