//! The outgoing envelope and its Standard Webhooks signature.
//!
//! The envelope is exactly the seed's: `{"hook": {"id", "eventType", "timestamp", "source"},
//! "data": {"integrationAccountId", "workspaceId", "record", "result"}}`. `hook.id` is the
//! subscription's id (the seed: "the ID of the webhook that was triggered"); the event's own id
//! travels in the `webhook-id` header, which is also what receivers deduplicate on.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::json;

use crate::ingest::verify::{decode_whsec, hmac_sha256};
use crate::store::{StoredEvent, Subscription};

/// The `hook.source` of every event the daemon sends.
pub const SOURCE: &str = "PMS_WEBHOOK";

/// The JSON body sent to `subscription` for `event`.
pub fn render(event: &StoredEvent, subscription: &Subscription) -> Vec<u8> {
    let envelope = json!({
        "hook": {
            "id": subscription.id,
            "eventType": event.event_type.as_str(),
            "timestamp": event.timestamp,
            "source": SOURCE,
        },
        "data": {
            "integrationAccountId": event.integration_account_id,
            "workspaceId": event.workspace_id,
            "record": event.record,
            "result": event.result,
        },
    });
    // A Value built from strings and stored JSON always serializes.
    serde_json::to_vec(&envelope).expect("envelope serializes")
}

/// The `webhook-signature` header value: `v1,` + base64 HMAC-SHA256 over `id.timestamp.body`
/// with the key inside the `whsec_` secret.
pub fn sign(secret: &str, webhook_id: &str, timestamp_secs: i64, body: &[u8]) -> String {
    let key = decode_whsec(secret).unwrap_or_else(|| secret.as_bytes().to_vec());
    let timestamp = timestamp_secs.to_string();
    let mac = hmac_sha256(&key, &[webhook_id.as_bytes(), b".", timestamp.as_bytes(), b".", body]);
    format!("v1,{}", BASE64.encode(mac))
}

/// A new signing secret: `whsec_` + base64 of 24 random bytes, as Standard Webhooks suggests.
pub fn new_secret() -> String {
    let bytes: [u8; 24] = rand::random();
    format!("whsec_{}", BASE64.encode(bytes))
}
