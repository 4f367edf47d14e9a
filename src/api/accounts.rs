//! `/v1/accounts`: integration accounts, their listener URLs and their stored state.
//!
//! Every create and update validates the whole resulting account: the plugin exists, the
//! verification secrets fit its scheme and are usable ([`check_verification`]: never empty, long
//! enough, decodable), `apiBaseUrl` passes the destination policy (`http::destination`), and
//! free-form maps and strings stay within documented sizes. Secrets are never shown again.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiContext;
use super::paging::{self, Cursor, Page};
use super::{JsonBody, created};
use crate::http::ApiError;
use crate::http::destination;
use crate::ingest::verify;
use crate::model::{self, RecordKind};
use crate::plugin::bindings::stayhook::plugin::types::VerificationScheme;
use crate::store::{Account, Inserted, SyncStates};

/// Shortest verification secret accepted from an operator for HMAC, Standard Webhooks (the decoded
/// `whsec_` key), URL-token and header-token schemes, in bytes: 128 bits, the floor for an HMAC
/// key or a bearer token that must not be guessed. Generated URL tokens have 24 random bytes,
/// Svix (Guesty) keys 24.
pub(super) const MIN_SECRET_BYTES: usize = 16;
/// Longest `workspaceId` and `name`, in bytes.
const MAX_TEXT_BYTES: usize = 256;
/// Most entries in `credentials`, `verification` or `settings`.
const MAX_MAP_ENTRIES: usize = 64;
/// Longest key in those maps, in bytes.
const MAX_MAP_KEY_BYTES: usize = 128;
/// Longest value in those maps, in bytes (room for a PEM key or a long-lived token).
const MAX_MAP_VALUE_BYTES: usize = 16 * 1024;
/// Longest `apiBaseUrl`, in bytes.
const MAX_URL_BYTES: usize = 2048;
/// Longest per-account reconciliation interval: 30 days.
const MAX_RECONCILE_INTERVAL_SECS: u64 = 30 * 24 * 60 * 60;
/// Default and largest page of `GET /v1/accounts`.
const LIST_LIMITS: paging::Limits = paging::Limits { default: 100, max: 1000 };

pub(super) fn routes() -> Router<Arc<ApiContext>> {
    Router::new()
        .route("/v1/accounts", get(list).post(create))
        .route("/v1/accounts/{account_id}", get(show).patch(update).delete(remove))
        .route("/v1/accounts/{account_id}/renormalize", axum::routing::post(renormalize))
        .route("/v1/accounts/{account_id}/reservations/{record_id}", get(|state, path| record(state, path, RecordKind::Reservation)))
        .route("/v1/accounts/{account_id}/conversations/{record_id}", get(|state, path| record(state, path, RecordKind::Conversation)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CreateAccount {
    id: Option<String>,
    workspace_id: String,
    pms: String,
    name: Option<String>,
    #[serde(default)]
    credentials: BTreeMap<String, String>,
    #[serde(default)]
    verification: BTreeMap<String, String>,
    #[serde(default)]
    settings: BTreeMap<String, String>,
    api_base_url: Option<String>,
    rate_limit_per_second: Option<u32>,
    reconcile_interval_secs: Option<u64>,
    /// The initial sync started with the account (when its plugin can list records).
    #[serde(default)]
    initial_sync: InitialSync,
}

/// `initialSync` of a new account: whether to run one (default: the daemon's `initial_sync`,
/// itself yes by default) and whether to deliver what it lists (default no: state only).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct InitialSync {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    deliver: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct UpdateAccount {
    workspace_id: Option<String>,
    pms: Option<String>,
    name: Option<Option<String>>,
    credentials: Option<BTreeMap<String, String>>,
    verification: Option<BTreeMap<String, String>>,
    settings: Option<BTreeMap<String, String>>,
    api_base_url: Option<Option<String>>,
    rate_limit_per_second: Option<Option<u32>>,
    reconcile_interval_secs: Option<Option<u64>>,
}

async fn create(State(daemon): State<Arc<ApiContext>>, JsonBody(body): JsonBody<CreateAccount>) -> Result<Response, ApiError> {
    let id = match body.id {
        Some(id) => checked_account_id(id)?,
        None => uuid::Uuid::new_v4().to_string(),
    };
    let now = model::time::now();
    let account = Account {
        id,
        workspace_id: checked_text("workspaceId", body.workspace_id)?,
        pms: body.pms,
        name: body.name,
        credentials: body.credentials,
        verification: body.verification,
        settings: body.settings,
        api_base_url: body.api_base_url,
        rate_limit_per_second: body.rate_limit_per_second,
        registration: BTreeMap::new(),
        reconcile_interval_secs: body.reconcile_interval_secs,
        created_at: now.clone(),
        updated_at: now,
    };
    let mut account = account;
    validate(&daemon, &account)?;
    ensure_url_token(&daemon, &mut account);
    match daemon.store.insert_account(&account).await? {
        Inserted::Created => {
            let initial_sync = body.initial_sync.enabled.unwrap_or(daemon.syncer.initial_sync_by_default());
            if initial_sync && crate::sync::unavailable_reason(&daemon.plugins, &account).is_none() {
                // A plugin that can list records: the account starts knowing what exists.
                if let Err(error) = daemon.syncer.start_initial(&account, body.initial_sync.deliver).await {
                    tracing::warn!(account_id = %account.id, %error, "the initial sync did not start");
                }
            }
            daemon.syncer.wake();
            Ok(created(view(&daemon, &account)))
        }
        Inserted::AlreadyExists => Err(ApiError::new(StatusCode::CONFLICT, "conflict", format!("account {:?} exists already", account.id))),
    }
}

/// `GET /v1/accounts?limit=&after=`: accounts by id, a page at a time.
async fn list(State(daemon): State<Arc<ApiContext>>, Query(query): Query<paging::PageQuery>) -> Result<Json<Value>, ApiError> {
    let limit = LIST_LIMITS.parse(query.limit.as_deref())?;
    // The store hands out every account (few, small); the page is cut here.
    let mut page = Page::new(limit);
    for account in
        daemon.store.list_accounts()?.iter().filter(|account| query.after.as_deref().is_none_or(|after| account.id.as_str() > after))
    {
        if !page.push(view(&daemon, account), Cursor::Text(account.id.clone())) {
            break;
        }
    }
    Ok(Json(page.finish("accounts")))
}

async fn show(State(daemon): State<Arc<ApiContext>>, Path(account_id): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(view(&daemon, &find(&daemon, &account_id)?)))
}

async fn update(
    State(daemon): State<Arc<ApiContext>>,
    Path(account_id): Path<String>,
    JsonBody(body): JsonBody<UpdateAccount>,
) -> Result<Json<Value>, ApiError> {
    let mut account = find(&daemon, &account_id)?;
    if let Some(workspace_id) = body.workspace_id {
        account.workspace_id = checked_text("workspaceId", workspace_id)?;
    }
    if let Some(pms) = body.pms {
        account.pms = pms;
    }
    if let Some(name) = body.name {
        account.name = name;
    }
    if let Some(credentials) = body.credentials {
        account.credentials = credentials;
    }
    if let Some(verification) = body.verification {
        account.verification = verification;
    }
    if let Some(settings) = body.settings {
        account.settings = settings;
    }
    if let Some(api_base_url) = body.api_base_url {
        account.api_base_url = api_base_url;
    }
    if let Some(rate_limit_per_second) = body.rate_limit_per_second {
        account.rate_limit_per_second = rate_limit_per_second;
    }
    if let Some(reconcile_interval_secs) = body.reconcile_interval_secs {
        account.reconcile_interval_secs = reconcile_interval_secs;
    }
    account.updated_at = model::time::now();
    validate(&daemon, &account)?;
    ensure_url_token(&daemon, &mut account);
    daemon.store.put_account(&account).await?;
    // The reconciliation interval may have changed.
    daemon.syncer.wake();
    Ok(Json(view(&daemon, &account)))
}

/// Remove an account and its subscriptions, then its data (inbox, events, deliveries, attempts,
/// state, digests) on a blocking thread; answers once both are done. What is still in progress
/// (a webhook being normalized, a delivery pending) finishes on its own (the scheduler cancels a
/// deleted account's deliveries) and retention deletes it later.
async fn remove(State(daemon): State<Arc<ApiContext>>, Path(account_id): Path<String>) -> Result<Response, ApiError> {
    if !daemon.store.remove_account(&account_id).await? {
        return Err(not_found(&account_id));
    }
    // A pass in progress notices the account is gone at its next page and stops.
    daemon.store.remove_sync_state(&account_id).await?;
    let store = daemon.store.clone();
    let removed_for = account_id.clone();
    let n_removed =
        tokio::task::spawn_blocking(move || store.remove_account_data_blocking(&removed_for)).await.map_err(ApiError::internal)??;
    tracing::info!(%account_id, n_removed, "account deleted with its data");
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn record(
    State(daemon): State<Arc<ApiContext>>,
    Path((account_id, record_id)): Path<(String, String)>,
    kind: RecordKind,
) -> Result<Json<Value>, ApiError> {
    find(&daemon, &account_id)?;
    let (record, _) = daemon
        .store
        .get_state(&account_id, kind, &record_id)?
        .ok_or_else(|| ApiError::not_found("record_not_found", format!("no {} {record_id:?} in account {account_id:?}", kind.as_str())))?;
    Ok(Json(record))
}

/// The account, or 404.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Renormalize {
    /// Only webhooks received at or after this time (RFC 3339).
    from: Option<String>,
    /// Only webhooks received before this time (RFC 3339).
    to: Option<String>,
}

/// Replay stored raw webhooks of an account through the plugin loaded now (after a fix), oldest
/// first. State decides again: records that come out the same are not delivered again.
async fn renormalize(
    State(daemon): State<Arc<ApiContext>>,
    Path(account_id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let account = find(&daemon, &account_id)?;
    // The body is optional: no body (or `{}`) replays everything stored for the account.
    let bounds: Renormalize = if body.iter().all(u8::is_ascii_whitespace) {
        Renormalize::default()
    } else {
        serde_json::from_slice(&body).map_err(|error| {
            if error.is_data() {
                ApiError::unprocessable("invalid_field", error.to_string())
            } else {
                ApiError::bad_request("invalid_json", error.to_string())
            }
        })?
    };
    let parse = |field: &str, value: &Option<String>| -> Result<Option<u64>, ApiError> {
        value
            .as_deref()
            .map(|text| {
                chrono::DateTime::parse_from_rfc3339(text).map(|time| u64::try_from(time.timestamp_millis()).unwrap_or(0)).map_err(
                    |error| ApiError::unprocessable("invalid_field", format!("{field}: {text:?} is not an RFC 3339 time ({error})")),
                )
            })
            .transpose()
    };
    let from_ms = parse("from", &bounds.from)?.unwrap_or(0);
    let to_ms = parse("to", &bounds.to)?.unwrap_or(u64::MAX);
    if daemon.plugins.get(&account.pms).is_none() {
        return Err(ApiError::unprocessable("unknown_plugin", format!("no plugin named {:?} is loaded", account.pms)));
    }
    let worker = daemon.clone();
    let (queued, in_flight) = tokio::task::spawn_blocking(move || -> Result<(usize, usize), crate::store::StoreError> {
        let mut queued = 0;
        let mut in_flight = 0;
        for inbox_id in worker.store.inbox_of_account(&account.id, from_ms, to_ms)? {
            // A requeued entry goes to the normalizer through the store's feed.
            if worker.store.requeue_inbox(inbox_id)?.is_some() {
                queued += 1;
            } else {
                in_flight += 1;
            }
        }
        Ok((queued, in_flight))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    tracing::info!(account = %account_id, queued, in_flight, "renormalizing stored webhooks");
    Ok((StatusCode::ACCEPTED, Json(json!({"accountId": account_id, "queued": queued, "alreadyPending": in_flight}))).into_response())
}

pub(super) fn find(daemon: &ApiContext, account_id: &str) -> Result<Account, ApiError> {
    daemon.store.get_account(account_id)?.ok_or_else(|| not_found(account_id))
}

fn not_found(account_id: &str) -> ApiError {
    ApiError::not_found("account_not_found", format!("no integration account {account_id:?}"))
}

fn checked_account_id(id: String) -> Result<String, ApiError> {
    let valid = !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
        && !id.starts_with('.');
    if valid {
        Ok(id)
    } else {
        Err(ApiError::unprocessable("invalid_field", format!("id {id:?} must be 1 to 128 letters, digits, '-', '_' or '.'")))
    }
}

fn checked_text(field: &str, value: String) -> Result<String, ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::unprocessable("invalid_field", format!("{field} must not be empty")));
    }
    if value.len() > MAX_TEXT_BYTES {
        return Err(ApiError::unprocessable("invalid_field", format!("{field} must be at most {MAX_TEXT_BYTES} bytes")));
    }
    Ok(value)
}

fn check_map(field: &str, map: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if map.len() > MAX_MAP_ENTRIES {
        return Err(ApiError::unprocessable("invalid_field", format!("{field} has {} entries; at most {MAX_MAP_ENTRIES}", map.len())));
    }
    for (key, value) in map {
        if key.is_empty() || key.len() > MAX_MAP_KEY_BYTES {
            return Err(ApiError::unprocessable("invalid_field", format!("{field} keys must be 1 to {MAX_MAP_KEY_BYTES} bytes")));
        }
        if value.len() > MAX_MAP_VALUE_BYTES {
            return Err(ApiError::unprocessable("invalid_field", format!("{field}.{key} must be at most {MAX_MAP_VALUE_BYTES} bytes")));
        }
    }
    Ok(())
}

/// Why an account's verification secrets would not verify anything, if so: the message names the
/// field. An empty map is fine (the account is then not verified, and says so); anything given
/// must be usable. `min_secret_bytes` is [`MIN_SECRET_BYTES`] for secrets an operator chose and 1
/// for secrets a PMS handed out at registration (whose length is the PMS's choice).
pub(super) fn check_verification(
    scheme: &VerificationScheme,
    verification: &BTreeMap<String, String>,
    min_secret_bytes: usize,
) -> Result<(), String> {
    let blank = |field: &str| format!("verification.{field} must not be empty or blank");
    match scheme {
        VerificationScheme::None => Ok(()),
        VerificationScheme::BasicAuth => {
            if verification.is_empty() {
                return Ok(());
            }
            for field in ["username", "password"] {
                match verification.get(field) {
                    None => return Err(format!("verification.{field} is missing: basic auth needs both username and password")),
                    Some(value) if value.trim().is_empty() => return Err(blank(field)),
                    Some(_) => {}
                }
            }
            if verification.get("username").is_some_and(|username| username.contains(':')) {
                return Err("verification.username must not contain ':' (basic auth separates the pair with it)".into());
            }
            Ok(())
        }
        VerificationScheme::StandardWebhooks => {
            let Some(secret) = verification.get("secret") else { return Ok(()) };
            if secret.trim().is_empty() || secret.trim() == "whsec_" {
                return Err(blank("secret"));
            }
            match verify::decode_whsec(secret) {
                Some(key) if key.len() >= min_secret_bytes => Ok(()),
                Some(key) => Err(format!(
                    "verification.secret decodes to a key of {} bytes; Standard Webhooks keys must have at least {min_secret_bytes}",
                    key.len()
                )),
                None => Err("verification.secret must be a Standard Webhooks key: whsec_ followed by base64".into()),
            }
        }
        VerificationScheme::Sns => match verification.get("topicArn") {
            Some(arn) if !arn.starts_with("arn:") => Err("verification.topicArn must be an SNS topic ARN (arn:aws:sns:...)".into()),
            _ => Ok(()),
        },
        VerificationScheme::HmacSha256(_)
        | VerificationScheme::HmacSha1Base64Body(_)
        | VerificationScheme::UrlToken(_)
        | VerificationScheme::HeaderToken(_) => {
            let Some(secret) = verification.get("secret") else { return Ok(()) };
            if secret.trim().is_empty() {
                return Err(blank("secret"));
            }
            if secret.len() < min_secret_bytes {
                return Err(format!("verification.secret has {} bytes; at least {min_secret_bytes} are needed", secret.len()));
            }
            Ok(())
        }
    }
}

fn validate(daemon: &ApiContext, account: &Account) -> Result<(), ApiError> {
    let plugin = daemon.plugins.get(&account.pms).ok_or_else(|| {
        let known: Vec<String> = daemon.plugins.list().iter().map(|plugin| plugin.info.name.clone()).collect();
        ApiError::unprocessable("unknown_plugin", format!("no plugin named {:?} is loaded; loaded: {}", account.pms, known.join(", ")))
    })?;
    let allowed: &[&str] = match plugin.info.verification {
        VerificationScheme::None => &[],
        VerificationScheme::BasicAuth => &["username", "password"],
        VerificationScheme::Sns => &["topicArn"],
        _ => &["secret"],
    };
    if let Some(base) = &account.api_base_url {
        if base.len() > MAX_URL_BYTES {
            return Err(ApiError::unprocessable("invalid_url", format!("apiBaseUrl must be at most {MAX_URL_BYTES} bytes")));
        }
        destination::check_api_base_url(base, daemon.settings.allow_private_destinations)
            .map_err(|reason| ApiError::unprocessable("invalid_url", format!("apiBaseUrl: {reason}")))?;
    }
    if let Some(name) = &account.name {
        checked_text("name", name.clone())?;
    }
    check_map("credentials", &account.credentials)?;
    check_map("verification", &account.verification)?;
    check_map("settings", &account.settings)?;
    if account.rate_limit_per_second == Some(0) {
        return Err(ApiError::unprocessable("invalid_field", "rateLimitPerSecond must be at least 1"));
    }
    if account.reconcile_interval_secs.is_some_and(|secs| secs > MAX_RECONCILE_INTERVAL_SECS) {
        return Err(ApiError::unprocessable(
            "invalid_field",
            format!("reconcileIntervalSecs must be at most {MAX_RECONCILE_INTERVAL_SECS} (30 days); 0 turns reconciliation off"),
        ));
    }
    if let Some(key) = account.verification.keys().find(|key| !allowed.contains(&key.as_str())) {
        return Err(ApiError::unprocessable(
            "invalid_field",
            format!(
                "verification.{key} is not used by {} ({}); it takes: {}",
                plugin.info.name,
                scheme_name(&plugin.info.verification),
                if allowed.is_empty() { "nothing".to_string() } else { allowed.join(", ") }
            ),
        ));
    }
    check_verification(&plugin.info.verification, &account.verification, MIN_SECRET_BYTES)
        .map_err(|message| ApiError::unprocessable("invalid_field", message))?;
    Ok(())
}

/// Plugins that verify with a token in the listener URL get one generated when none is set.
fn ensure_url_token(daemon: &ApiContext, account: &mut Account) {
    let scheme = daemon.plugins.get(&account.pms).map(|plugin| plugin.info.verification.clone());
    if matches!(scheme, Some(VerificationScheme::UrlToken(_))) && !account.verification.contains_key("secret") {
        let bytes: [u8; 24] = rand::random();
        account.verification.insert("secret".into(), hex::encode(bytes));
    }
}

/// The wire name of a verification scheme.
pub(super) fn scheme_name(scheme: &VerificationScheme) -> &'static str {
    match scheme {
        VerificationScheme::None => "none",
        VerificationScheme::BasicAuth => "basic-auth",
        VerificationScheme::HmacSha256(_) => "hmac-sha256",
        VerificationScheme::StandardWebhooks => "standard-webhooks",
        VerificationScheme::UrlToken(_) => "url-token",
        VerificationScheme::HeaderToken(_) => "header-token",
        VerificationScheme::HmacSha1Base64Body(_) => "hmac-sha1-base64-body",
        VerificationScheme::Sns => "sns",
    }
}

/// An account as the API shows it: never its secrets, only which ones are set. `configured` is
/// true only when the secrets are usable; an account stored before they were checked shows why
/// not in `verification.problem`.
pub(super) fn view(daemon: &ApiContext, account: &Account) -> Value {
    let scheme = daemon.plugins.get(&account.pms).map(|plugin| plugin.info.verification.clone()).unwrap_or(VerificationScheme::None);
    // Registration may have stored a short PMS-issued secret: only unusable ones are a problem.
    let problem = check_verification(&scheme, &account.verification, 1).err();
    let mut verification = json!({
        "scheme": scheme_name(&scheme),
        "configured": problem.is_none() && verify::is_configured(&scheme, &account.verification),
    });
    if let Some(problem) = problem {
        verification["problem"] = Value::String(problem);
    }
    json!({
        "id": account.id,
        "workspaceId": account.workspace_id,
        "pms": account.pms,
        "name": account.name,
        "listenerUrl": daemon.account_listener_url(account),
        "credentials": account.credentials.keys().collect::<Vec<_>>(),
        "verification": verification,
        "settings": account.settings,
        "apiBaseUrl": account.api_base_url,
        "rateLimitPerSecond": account.rate_limit_per_second,
        "reconcileIntervalSecs": account.reconcile_interval_secs,
        "registration": account.registration,
        "createdAt": account.created_at,
        "updatedAt": account.updated_at,
    })
}
