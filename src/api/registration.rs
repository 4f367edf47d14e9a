//! `/v1/accounts/{accountId}/pms-webhooks`: automatic webhook registration in the PMS (the seed's
//! "Automatic Webhook Configuration"), or the listener URL for manual set-up where the PMS has no
//! API for it.
//!
//! The plugin's `subscribe` says which API calls register the listener URL; like `normalize` it is a
//! continuation: the host performs the calls through the enrichment client (credentials, rate
//! limits, retries) and calls it again with the answers until it is done. Plugin code runs on a
//! blocking thread, never on the async runtime. What the PMS hands back (its webhook ids) is stored
//! on the account; a signing secret goes into the account's verification secrets, unless it is
//! unusable (empty, or not decodable for the scheme): then the registration is kept, the secret is
//! not, and the answer is 502 `registration_failed` saying so. The API calls go through the
//! enrichment client, so the destination policy applies to them.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;

use super::ApiContext;
use super::accounts::find;
use crate::http::ApiError;
use crate::model;
use crate::plugin::bindings::stayhook::plugin::types as wit;
use crate::store::Account;

pub(super) fn routes() -> Router<Arc<ApiContext>> {
    Router::new().route(
        "/v1/accounts/{account_id}/pms-webhooks",
        post(|state, path| run(state, path, wit::RegistrationAction::Register))
            .delete(|state, path| run(state, path, wit::RegistrationAction::Unregister)),
    )
}

async fn run(
    State(daemon): State<Arc<ApiContext>>,
    Path(account_id): Path<String>,
    action: wit::RegistrationAction,
) -> Result<Response, ApiError> {
    let mut account = find(&daemon, &account_id)?;
    let plugin = daemon
        .plugins
        .get(&account.pms)
        .ok_or_else(|| ApiError::unprocessable("unknown_plugin", format!("no plugin named {:?} is loaded", account.pms)))?;
    let listener_url = daemon.account_listener_url(&account);
    let mut responses: Vec<wit::ApiResponse> = Vec::new();
    for _ in 0..=daemon.settings.enrichment_max_rounds {
        let request = registration_request(&account, action, &listener_url, &responses);
        let loaded = plugin.clone();
        let step = tokio::task::spawn_blocking(move || loaded.session().and_then(|mut session| session.subscribe(&request)))
            .await
            .map_err(ApiError::internal)?
            .map_err(|error| ApiError::new(StatusCode::BAD_GATEWAY, "plugin_failed", error.to_string()))?
            .map_err(|error| {
                let message = match error {
                    wit::PluginError::BadPayload(message) | wit::PluginError::UnsupportedEvent(message) => message,
                };
                ApiError::new(StatusCode::BAD_GATEWAY, "registration_failed", message)
            })?;
        match step {
            wit::RegistrationStep::Manual(instructions) => {
                return Ok(Json(json!({ "mode": "manual", "listenerUrl": listener_url, "instructions": instructions })).into_response());
            }
            wit::RegistrationStep::Fetch(requests) => {
                if requests.len() > daemon.settings.enrichment_max_requests {
                    return Err(ApiError::new(StatusCode::BAD_GATEWAY, "registration_failed", "the plugin asked for too many API calls"));
                }
                let answers = daemon
                    .enricher
                    .perform(&account, plugin.info.api.as_ref(), requests)
                    .await
                    .map_err(|error| ApiError::new(StatusCode::BAD_GATEWAY, "pms_api_failed", error.to_string()))?;
                responses.extend(answers);
            }
            wit::RegistrationStep::Done(values) => {
                let mut refused_secret = None;
                match action {
                    wit::RegistrationAction::Register => {
                        for (name, value) in values {
                            if name == "secret" {
                                let mut verification = account.verification.clone();
                                verification.insert(name, value);
                                // The PMS chose the secret: any usable one is kept, whatever its length.
                                match super::accounts::check_verification(&plugin.info.verification, &verification, 1) {
                                    Ok(()) => account.verification = verification,
                                    Err(problem) => refused_secret = Some(problem),
                                }
                            } else {
                                account.registration.insert(name, value);
                            }
                        }
                    }
                    wit::RegistrationAction::Unregister => account.registration.clear(),
                }
                account.updated_at = model::time::now();
                daemon.store.put_account(&account).await?;
                if let Some(problem) = refused_secret {
                    tracing::warn!(account = %account.id, %problem, "the PMS handed out an unusable webhook secret; not stored");
                    return Err(ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "registration_failed",
                        format!(
                            "the PMS registered the webhook ({:?}) but handed out an unusable secret ({problem}); it was not stored: \
                             set verification.secret with PATCH /v1/accounts/{}",
                            account.registration, account.id
                        ),
                    ));
                }
                let status = if action == wit::RegistrationAction::Register { StatusCode::CREATED } else { StatusCode::OK };
                let body = json!({ "mode": "automatic", "listenerUrl": daemon.account_listener_url(&account), "registration": account.registration, "account": super::accounts::view(&daemon, &account) });
                return Ok((status, Json(body)).into_response());
            }
        }
    }
    Err(ApiError::new(StatusCode::BAD_GATEWAY, "registration_failed", "the plugin did not finish within the allowed rounds of API calls"))
}

fn registration_request(
    account: &Account,
    action: wit::RegistrationAction,
    listener_url: &str,
    responses: &[wit::ApiResponse],
) -> wit::RegistrationRequest {
    wit::RegistrationRequest {
        account: wit::AccountContext {
            id: account.id.clone(),
            workspace_id: account.workspace_id.clone(),
            settings: account.settings.iter().map(|(name, value)| (name.clone(), value.clone())).collect(),
        },
        action,
        listener_url: listener_url.to_string(),
        registered: account.registration.iter().map(|(name, value)| (name.clone(), value.clone())).collect(),
        responses: responses.to_vec(),
    }
}
