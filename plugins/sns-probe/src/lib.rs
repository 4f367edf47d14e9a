//! The SNS probe: a test-only plugin whose verification scheme is `sns` (contract v0.2), so the
//! daemon's tests can drive the Amazon SNS path end to end: the host verifies the message, answers
//! the subscription handshake, and hands this plugin a notification's `Message` as the body. The
//! Message is JSON `{"id": "..."}`; the plugin answers one upserted reservation with that id and
//! the topic (header `x-stayhook-sns-topic-arn`) as its notes, proving the envelope's fields arrive.

use stayhook_plugin_sdk::model::*;
use stayhook_plugin_sdk::{json, json_object_body};

/// What `describe` answers.
pub fn plugin_info() -> PluginInfo {
    PluginInfo {
        sync_modes: Vec::new(),
        name: "sns-probe".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        pms: "SNS probe (test plugin)".into(),
        events: vec!["any".into()],
        verification: VerificationScheme::Sns,
        api: None,
    }
}

/// One reservation per notification.
pub fn normalize(inbound: &Inbound, _responses: &[ApiResponse]) -> Result<Outcome, PluginError> {
    let body = json_object_body(inbound)?;
    let id = json::string(&body, "id").ok_or_else(|| PluginError::BadPayload("the message has no id".into()))?;
    let mut reservation = Reservation::new(id);
    reservation.notes = inbound.headers.iter().find(|(name, _)| name == "x-stayhook-sns-topic-arn").map(|(_, value)| value.clone());
    Ok(Outcome::Done(vec![Event::ReservationUpserted(reservation)]))
}

stayhook_plugin_sdk::plugin! {
    describe: plugin_info,
    normalize: normalize,
}
