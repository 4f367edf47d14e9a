//! Running a plugin without a daemon: `stayhook plugin run` and the golden cases.
//!
//! A golden case is a folder: `body.json` (or `body.txt`, `body.form`: the raw body), `case.json`
//! (`source`: where the sample comes from; `note`; optional `method`, `contentType`, `query`,
//! `headers`, `settings`), `responses/<request-id>.json` for every API call the plugin makes
//! (docs/enrichment.md), and `expected.json`, the unified events a daemon with an empty store
//! would produce, as `[{"eventType", "result", "record"}]`, or `{"refused": "<part of the reason>"}`
//! for bad input the plugin must refuse (`bad payload: ...`, `unsupported event: ...`). The same runner serves the CLI and the
//! integration tests, so what an integration author sees is what the tests check.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};

use super::bindings::stayhook::plugin::types as wit;
use super::{CallError, LoadedPlugin};
use crate::model;

/// Why an offline run failed.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// A case file is missing or malformed.
    #[error("{path}: {message}")]
    Case {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The plugin trapped, timed out or ran out of memory.
    #[error("{0}")]
    Call(#[from] CallError),
    /// The plugin refused the input.
    #[error("the plugin refused the input: {0}")]
    Refused(String),
    /// The plugin's output is invalid.
    #[error("{0}")]
    Invalid(#[from] model::InvalidOutput),
    /// The plugin asked for an API call that has no recorded response.
    #[error("the plugin asked for {0}, which has no recorded response (responses/<id>.json)")]
    MissingResponse(String),
    /// The plugin kept asking for API calls.
    #[error("the plugin asked for API calls in more than {0} rounds")]
    TooManyRounds(u32),
}

/// One inbound webhook for an offline run.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CaseRequest {
    /// Where the sample payload comes from (public documentation address).
    pub source: Option<String>,
    /// What the case shows.
    pub note: Option<String>,
    /// HTTP method; POST when absent.
    pub method: Option<String>,
    /// Content-Type; application/json when absent and the body is `body.json`.
    pub content_type: Option<String>,
    /// Raw query string.
    pub query: Option<String>,
    /// Request headers.
    pub headers: BTreeMap<String, String>,
    /// Account settings handed to the plugin.
    pub settings: BTreeMap<String, String>,
    /// The body (filled from the body file).
    #[serde(skip)]
    pub body: Vec<u8>,
    /// Folder of recorded API responses (`<request-id>.json`).
    #[serde(skip)]
    pub responses_dir: Option<PathBuf>,
}

/// A recorded API response file.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RecordedResponse {
    status: u16,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default)]
    body_text: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

impl CaseRequest {
    /// A POST of `body` with this content type.
    pub fn post(body: Vec<u8>, content_type: Option<String>) -> Self {
        Self { body, content_type, ..Self::default() }
    }

    /// Read a case folder's request (`case.json`, optional, and the body file).
    pub fn load(dir: &Path) -> Result<Self, OfflineError> {
        let case_path = dir.join("case.json");
        let mut request: CaseRequest = if case_path.exists() {
            let text = std::fs::read_to_string(&case_path)
                .map_err(|error| OfflineError::Case { path: case_path.clone(), message: error.to_string() })?;
            serde_json::from_str(&text).map_err(|error| OfflineError::Case { path: case_path.clone(), message: error.to_string() })?
        } else {
            CaseRequest::default()
        };
        let (body_path, default_type) =
            [("body.json", "application/json"), ("body.form", "application/x-www-form-urlencoded"), ("body.txt", "text/plain")]
                .into_iter()
                .map(|(name, content_type)| (dir.join(name), content_type))
                .find(|(path, _)| path.exists())
                .ok_or_else(|| OfflineError::Case { path: dir.to_path_buf(), message: "no body.json, body.form or body.txt".into() })?;
        request.body = std::fs::read(&body_path).map_err(|error| OfflineError::Case { path: body_path, message: error.to_string() })?;
        request.content_type.get_or_insert_with(|| default_type.to_string());
        let responses_dir = dir.join("responses");
        request.responses_dir = responses_dir.is_dir().then_some(responses_dir);
        Ok(request)
    }
}

/// One API call an offline run answered from a recorded file.
#[derive(Debug, Clone)]
pub struct ReplayedCall {
    /// HTTP method.
    pub method: String,
    /// The path (or absolute URL) the plugin asked for.
    pub path: String,
    /// Query pairs.
    pub query: Vec<(String, String)>,
    /// The recorded answer: status, headers, body.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: Vec<u8>,
}

/// Run `plugin` on `request` as a daemon with an empty store would, and render the events.
pub fn run(plugin: &LoadedPlugin, request: &CaseRequest) -> Result<Vec<Value>, OfflineError> {
    run_traced(plugin, request).map(|(events, _)| events)
}

/// Like [`run`], and also the API calls the plugin made with their recorded answers (so a test
/// can serve them from a real HTTP server).
pub fn run_traced(plugin: &LoadedPlugin, request: &CaseRequest) -> Result<(Vec<Value>, Vec<ReplayedCall>), OfflineError> {
    let mut session = plugin.session()?;
    let inbound = wit::Inbound {
        account: wit::AccountContext {
            id: "offline".into(),
            workspace_id: "offline".into(),
            settings: request.settings.iter().map(|(name, value)| (name.clone(), value.clone())).collect(),
        },
        method: request.method.clone().unwrap_or_else(|| "POST".into()),
        query: request.query.clone().unwrap_or_default(),
        content_type: request.content_type.clone(),
        headers: request.headers.iter().map(|(name, value)| (name.to_ascii_lowercase(), value.clone())).collect(),
        body: request.body.clone(),
        received_at: model::time::now(),
    };
    let mut responses = Vec::new();
    let mut calls = Vec::new();
    let mut n_rounds = 0;
    let events = loop {
        match session.normalize(&inbound, &responses)? {
            Err(wit::PluginError::BadPayload(message)) => return Err(OfflineError::Refused(format!("bad payload: {message}"))),
            Err(wit::PluginError::UnsupportedEvent(message)) => return Err(OfflineError::Refused(format!("unsupported event: {message}"))),
            Ok(wit::Outcome::Fetch(requests)) => {
                n_rounds += 1;
                if n_rounds > MAX_ROUNDS {
                    return Err(OfflineError::TooManyRounds(MAX_ROUNDS));
                }
                for api_request in &requests {
                    let response = recorded_response(request.responses_dir.as_deref(), api_request)?;
                    calls.push(ReplayedCall {
                        method: api_request.method.clone(),
                        path: api_request.path.clone(),
                        query: api_request.query.clone(),
                        status: response.status,
                        headers: response.headers.clone(),
                        body: response.body.clone(),
                    });
                    responses.push(response);
                }
            }
            Ok(wit::Outcome::Done(events)) => break events,
        }
    };
    let events = events
        .iter()
        .map(|event| {
            let normalized = model::render_event(event)?;
            Ok(json!({ "eventType": normalized.event_type, "result": normalized.result, "record": normalized.record }))
        })
        .collect::<Result<Vec<_>, OfflineError>>()?;
    Ok((events, calls))
}

/// Rounds of recorded API calls an offline run allows (the daemon's default limit).
const MAX_ROUNDS: u32 = 4;

fn recorded_response(dir: Option<&Path>, api_request: &wit::ApiRequest) -> Result<wit::ApiResponse, OfflineError> {
    let described = || format!("{} {} (id {:?})", api_request.method, api_request.path, api_request.id);
    let path = dir
        .map(|dir| dir.join(format!("{}.json", api_request.id)))
        .filter(|path| path.exists())
        .ok_or_else(|| OfflineError::MissingResponse(described()))?;
    let text = std::fs::read_to_string(&path).map_err(|error| OfflineError::Case { path: path.clone(), message: error.to_string() })?;
    let recorded: RecordedResponse =
        serde_json::from_str(&text).map_err(|error| OfflineError::Case { path: path.clone(), message: error.to_string() })?;
    let body = match (recorded.body, recorded.body_text) {
        (Some(value), _) => serde_json::to_vec(&value).unwrap_or_default(),
        (None, Some(text)) => text.into_bytes(),
        (None, None) => Vec::new(),
    };
    Ok(wit::ApiResponse {
        id: api_request.id.clone(),
        status: recorded.status,
        headers: recorded.headers.into_iter().map(|(name, value)| (name.to_ascii_lowercase(), value)).collect(),
        body,
        error: recorded.error,
    })
}

/// Golden cases of a plugin source folder (`<dir>/tests/cases/*`), sorted.
pub fn case_dirs(plugin_dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(plugin_dir.join("tests").join("cases"))
        .map(|entries| entries.filter_map(|entry| entry.ok().map(|entry| entry.path())).filter(|path| path.is_dir()).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// How one golden case went.
#[derive(Debug)]
pub enum CaseOutcome {
    /// The output equals `expected.json`.
    Passed,
    /// `expected.json` was (re)written from the output (bless mode).
    Blessed,
    /// The output differs: one line per JSON path that differs.
    Differs(Vec<String>),
    /// The case could not run (bad case files, plugin refused or failed, no expected.json).
    Failed(String),
}

/// Run one case folder; with `bless`, write its `expected.json` from the output instead of
/// comparing.
pub fn check_case(plugin: &LoadedPlugin, case_dir: &Path, bless: bool) -> CaseOutcome {
    let request = match CaseRequest::load(case_dir) {
        Ok(request) => request,
        Err(error) => return CaseOutcome::Failed(error.to_string()),
    };
    // A refusal (bad payload, unsupported event) is an outcome a case may expect: bad input must
    // be refused with a reason, never turned into events.
    let actual = match run(plugin, &request) {
        Ok(events) => Value::Array(events),
        Err(OfflineError::Refused(message)) => json!({ "refused": message }),
        Err(error) => return CaseOutcome::Failed(error.to_string()),
    };
    let expected_path = case_dir.join("expected.json");
    if bless {
        let text = serde_json::to_string_pretty(&actual).unwrap_or_default() + "\n";
        return match std::fs::write(&expected_path, text) {
            Ok(()) => CaseOutcome::Blessed,
            Err(error) => CaseOutcome::Failed(format!("{}: {error}", expected_path.display())),
        };
    }
    let expected: Value = match std::fs::read_to_string(&expected_path) {
        Ok(text) => match serde_json::from_str(&text) {
            Ok(value) => value,
            Err(error) => return CaseOutcome::Failed(format!("{}: {error}", expected_path.display())),
        },
        Err(_) => return CaseOutcome::Failed(format!("{} is missing (write it with --bless, then check it)", expected_path.display())),
    };
    if let Some(wanted) = expected.get("refused") {
        let wanted = wanted.as_str().unwrap_or_default();
        return match actual.get("refused").and_then(Value::as_str) {
            Some(message) if message.contains(wanted) => CaseOutcome::Passed,
            Some(message) => CaseOutcome::Differs(vec![format!("$.refused: expected a refusal containing {wanted:?}, got {message:?}")]),
            None => CaseOutcome::Differs(vec![format!("$: expected a refusal containing {wanted:?}, got events {actual}")]),
        };
    }
    let lines = diff(&expected, &actual);
    if lines.is_empty() { CaseOutcome::Passed } else { CaseOutcome::Differs(lines) }
}

/// Where two JSON values differ, one line per path: `$[0].record.status: expected "CONFIRMED",
/// got "UNKNOWN"`; a key only on one side is `missing` or `unexpected`.
pub fn diff(expected: &Value, actual: &Value) -> Vec<String> {
    fn walk(path: &str, expected: Option<&Value>, actual: Option<&Value>, lines: &mut Vec<String>) {
        match (expected, actual) {
            (Some(Value::Object(a)), Some(Value::Object(b))) => {
                for key in a.keys().chain(b.keys().filter(|key| !a.contains_key(*key))) {
                    walk(&format!("{path}.{key}"), a.get(key), b.get(key), lines);
                }
            }
            (Some(Value::Array(a)), Some(Value::Array(b))) => {
                if a.len() != b.len() {
                    lines.push(format!("{path}: expected {} items, got {}", a.len(), b.len()));
                }
                for idx in 0..a.len().max(b.len()) {
                    walk(&format!("{path}[{idx}]"), a.get(idx), b.get(idx), lines);
                }
            }
            (Some(a), Some(b)) if a != b => lines.push(format!("{path}: expected {a}, got {b}")),
            (Some(a), None) => lines.push(format!("{path}: missing (expected {a})")),
            (None, Some(b)) => lines.push(format!("{path}: unexpected {b}")),
            _ => {}
        }
    }
    let mut lines = Vec::new();
    walk("$", Some(expected), Some(actual), &mut lines);
    lines
}
