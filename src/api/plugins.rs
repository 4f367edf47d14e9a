//! `/v1/plugins`: what is loaded, why files failed to load, and uploads that replace a plugin
//! without a restart.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::ApiContext;
use super::accounts::scheme_name;
use super::paging::{self, Cursor, Page, PageQuery};
use crate::http::ApiError;
use crate::model;
use crate::plugin::bindings::stayhook::plugin::types::{AuthScheme, VerificationScheme};
use crate::plugin::{CallError, LoadedPlugin, PluginError, PluginSource};

/// Largest upload accepted (components are a few hundred KiB to a few MiB).
const MAX_UPLOAD_BYTES: usize = 64 << 20;
/// Default and largest page of `GET /v1/plugins`.
const LIST_LIMITS: paging::Limits = paging::Limits { default: 100, max: 1000 };
/// Most `loadErrors` listed (each an excerpt).
const MAX_LOAD_ERRORS: usize = 100;

pub(super) fn routes() -> Router<Arc<ApiContext>> {
    Router::new()
        .route("/v1/plugins", get(list))
        .route("/v1/plugins/{name}", get(show).put(upload).layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)))
}

/// `GET /v1/plugins?limit=&after=`: plugins by name, a page at a time, and (on every page) the
/// files that failed to load.
async fn list(State(daemon): State<Arc<ApiContext>>, Query(query): Query<PageQuery>) -> Result<Json<Value>, ApiError> {
    let limit = LIST_LIMITS.parse(query.limit.as_deref())?;
    let plugins = daemon.plugins.list(); // by name
    let mut page = Page::new(limit);
    for plugin in plugins.iter().filter(|plugin| query.after.as_deref().is_none_or(|after| plugin.info.name.as_str() > after)) {
        if !page.push(view(plugin), Cursor::Text(plugin.info.name.clone())) {
            break;
        }
    }
    let errors: Vec<Value> = daemon
        .plugins
        .failures()
        .iter()
        .take(MAX_LOAD_ERRORS)
        .map(|failure| {
            let mut error = json!({"path": failure.path, "error": failure.error, "at": model::time::from_unix_ms(failure.at_ms)});
            paging::excerpt(&mut error);
            error
        })
        .collect();
    let mut answer = page.finish("plugins");
    answer["loadErrors"] = Value::Array(errors);
    Ok(Json(answer))
}

async fn show(State(daemon): State<Arc<ApiContext>>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    daemon.plugins.get(&name).map(|plugin| Json(view(&plugin))).ok_or_else(|| not_found(&name))
}

/// Replace (or add) the plugin `name` with the uploaded component. The bytes are compiled and
/// checked (contract version, instantiation and `describe` under the plugin limits, declared
/// name) before anything changes: a component that runs past the time limit while loading is
/// refused with 422 `plugin_timeout`, one over the memory cap with 422 `plugin_memory_limit`.
async fn upload(State(daemon): State<Arc<ApiContext>>, Path(name): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("empty_body", "send the component's bytes (a .wasm file) as the request body"));
    }
    let existed = daemon.plugins.get(&name).is_some();
    tracing::debug!(plugin = %name, bytes = body.len(), "plugin upload received; compiling and checking it");
    let installing = daemon.clone();
    let name_for_install = name.clone();
    let installed =
        tokio::task::spawn_blocking(move || installing.plugins.install(&name_for_install, &body, &installing.settings.plugin_dir))
            .await
            .map_err(ApiError::internal)?;
    match installed {
        Ok(plugin) => {
            tracing::info!(plugin = %name, version = %plugin.info.version, sha256 = %plugin.sha256, "plugin uploaded");
            let status = if existed { StatusCode::OK } else { StatusCode::CREATED };
            Ok((status, Json(view(&plugin))).into_response())
        }
        Err(PluginError::Io { path, message }) => Err(ApiError::internal(format!("{}: {message}", path.display()))),
        Err(PluginError::Engine(message)) => Err(ApiError::internal(message)),
        Err(error @ PluginError::NameMismatch { .. }) => Err(ApiError::unprocessable("plugin_name_mismatch", error.to_string())),
        Err(error @ PluginError::Load(CallError::Timeout(_))) => Err(refused("plugin_timeout", &error)),
        Err(error @ PluginError::Load(CallError::MemoryLimit(_))) => Err(refused("plugin_memory_limit", &error)),
        Err(error) => Err(refused("invalid_plugin", &error)),
    }
}

/// A refused upload: 422 with the reason, and the word that nothing changed.
fn refused(code: &'static str, error: &PluginError) -> ApiError {
    ApiError::unprocessable(code, format!("{error}; the running plugin (if any) is unchanged"))
}

fn view(plugin: &LoadedPlugin) -> Value {
    let (source, path) = match &plugin.source {
        PluginSource::BuiltIn => ("built-in", None),
        PluginSource::File(path) => ("file", Some(path.display().to_string())),
    };
    json!({
        "name": plugin.info.name,
        "version": plugin.info.version,
        "pms": plugin.info.pms,
        "events": plugin.info.events,
        "source": source,
        "path": path,
        "sha256": plugin.sha256,
        "loadedAt": model::time::from_unix_ms(plugin.loaded_at_ms),
        "verification": scheme_name(&plugin.info.verification),
        "enrichment": plugin.info.api.is_some(),
        "verificationFields": verification_fields(&plugin.info.verification),
        "credentialFields": credential_fields(plugin),
    })
}

/// The `verification` keys an account of this plugin takes (what the console's form asks for).
fn verification_fields(scheme: &VerificationScheme) -> &'static [&'static str] {
    match scheme {
        VerificationScheme::None => &[],
        VerificationScheme::BasicAuth => &["username", "password"],
        // Amazon SNS proves itself with a certificate; an account may pin its topic.
        VerificationScheme::Sns => &["topicArn"],
        _ => &["secret"],
    }
}

/// The `credentials` keys the plugin's API authentication uses.
fn credential_fields(plugin: &LoadedPlugin) -> &'static [&'static str] {
    match plugin.info.api.as_ref().map(|api| &api.auth) {
        None | Some(AuthScheme::None) => &[],
        Some(AuthScheme::ApiKeyHeader(_)) => &["apiKey"],
        Some(AuthScheme::Bearer) => &["token"],
        Some(AuthScheme::Basic) => &["username", "password"],
        Some(AuthScheme::Oauth2ClientCredentials(_)) => &["clientId", "clientSecret"],
    }
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found("plugin_not_found", format!("no plugin named {name:?} is loaded"))
}
