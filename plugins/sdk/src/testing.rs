//! The host's side of a call, for a plugin's unit tests: requests as the host builds them, answers
//! as it records them, and the steps a plugin answers taken apart with a clear panic when they are
//! not what the test expected.
//!
//! ```
//! use serde_json::json;
//! use stayhook_plugin_sdk::model::{SyncMode, SyncOutcome};
//! use stayhook_plugin_sdk::testing::{answer, fetch, page, query, sync_request};
//! # use stayhook_plugin_sdk::model::{ApiResponse, PluginError, SyncPage, SyncRequest};
//! # fn sync(request: &SyncRequest, responses: &[ApiResponse]) -> Result<SyncOutcome, PluginError> {
//! #     match responses.first() {
//! #         None => Ok(SyncOutcome::Fetch(vec![stayhook_plugin_sdk::api::get("list", "/bookings")])),
//! #         Some(_) => Ok(SyncOutcome::Page(SyncPage { events: Vec::new(), next_cursor: None, more: false })),
//! #     }
//! # }
//!
//! let request = sync_request(SyncMode::ModifiedSince).since("2026-12-01T00:00:00Z").setting("propertyId", "7").build();
//! let list = fetch(sync(&request, &[]).unwrap());
//! assert_eq!(list.path, "/bookings");
//! assert_eq!(query(&list, "page"), None);
//! let last = page(sync(&request, &[answer("list", 200, json!({"data": []}))]).unwrap());
//! assert!(!last.more);
//! ```
//!
//! Nothing here is behind a feature: a release build of a plugin does not call these functions,
//! so they are not in its component.

use serde_json::Value;

use crate::model::{AccountContext, ApiRequest, ApiResponse, Inbound, RegistrationAction, RegistrationRequest, RegistrationStep};
use crate::model::{SyncMode, SyncOutcome, SyncPage, SyncRequest};

/// The account every helper here uses: id and workspace `test`, no settings.
pub fn account() -> AccountContext {
    AccountContext { id: "test".into(), workspace_id: "test".into(), settings: Vec::new() }
}

/// A JSON webhook as the host hands it to `normalize` (account "test", POST, no query, no headers,
/// received at 2026-01-01T00:00:00Z).
pub fn json_inbound(body: &Value) -> Inbound {
    Inbound {
        account: account(),
        method: "POST".into(),
        query: String::new(),
        content_type: Some("application/json".into()),
        headers: Vec::new(),
        body: body.to_string().into_bytes(),
        received_at: "2026-01-01T00:00:00Z".into(),
    }
}

/// One page of a sync pass as the host asks for it; see [`sync_request`].
#[derive(Debug, Clone)]
pub struct SyncRequestBuilder {
    request: SyncRequest,
}

/// A sync request in this mode: the first page of an initial pass (no cursor, no `since`, no
/// `until`) for [`account`], started at 2026-01-01T00:00:00Z. Set what the test needs, then
/// [`build`](SyncRequestBuilder::build).
pub fn sync_request(mode: SyncMode) -> SyncRequestBuilder {
    SyncRequestBuilder {
        request: SyncRequest { account: account(), mode, cursor: None, since: None, until: None, now: "2026-01-01T00:00:00Z".into() },
    }
}

impl SyncRequestBuilder {
    /// The cursor the previous page returned (`None`: a pass's first page).
    pub fn cursor<'a>(mut self, cursor: impl Into<Option<&'a str>>) -> Self {
        self.request.cursor = cursor.into().map(str::to_string);
        self
    }

    /// The instant (or, for a stay-date window, the first day) the pass starts from.
    pub fn since<'a>(mut self, since: impl Into<Option<&'a str>>) -> Self {
        self.request.since = since.into().map(str::to_string);
        self
    }

    /// The end of a stay-date window (exclusive).
    pub fn until<'a>(mut self, until: impl Into<Option<&'a str>>) -> Self {
        self.request.until = until.into().map(str::to_string);
        self
    }

    /// When the host started the pass.
    pub fn now(mut self, now: &str) -> Self {
        self.request.now = now.to_string();
        self
    }

    /// Adds an account setting (a setting may be given more than once, as the host may).
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.request.account.settings.push((name.to_string(), value.to_string()));
        self
    }

    /// Replaces the account's settings.
    pub fn settings(mut self, settings: Vec<(String, String)>) -> Self {
        self.request.account.settings = settings;
        self
    }

    /// The request.
    pub fn build(self) -> SyncRequest {
        self.request
    }
}

impl From<SyncRequestBuilder> for SyncRequest {
    fn from(builder: SyncRequestBuilder) -> Self {
        builder.build()
    }
}

/// A registration step as the host asks for it; see [`registration_request`].
#[derive(Debug, Clone)]
pub struct RegistrationRequestBuilder {
    request: RegistrationRequest,
}

/// A registration request for this action and listener URL: [`account`], nothing registered yet,
/// no answers. Set what the test needs, then [`build`](RegistrationRequestBuilder::build).
pub fn registration_request(action: RegistrationAction, listener_url: &str) -> RegistrationRequestBuilder {
    RegistrationRequestBuilder {
        request: RegistrationRequest {
            account: account(),
            action,
            listener_url: listener_url.to_string(),
            registered: Vec::new(),
            responses: Vec::new(),
        },
    }
}

impl RegistrationRequestBuilder {
    /// Adds an account setting.
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.request.account.settings.push((name.to_string(), value.to_string()));
        self
    }

    /// Adds a value an earlier registration stored (a webhook id, a secret).
    pub fn registered(mut self, name: &str, value: &str) -> Self {
        self.request.registered.push((name.to_string(), value.to_string()));
        self
    }

    /// Replaces the values an earlier registration stored.
    pub fn registered_values(mut self, registered: Vec<(String, String)>) -> Self {
        self.request.registered = registered;
        self
    }

    /// The answers to the API requests of the steps so far.
    pub fn responses(mut self, responses: Vec<ApiResponse>) -> Self {
        self.request.responses = responses;
        self
    }

    /// The request.
    pub fn build(self) -> RegistrationRequest {
        self.request
    }
}

impl From<RegistrationRequestBuilder> for RegistrationRequest {
    fn from(builder: RegistrationRequestBuilder) -> Self {
        builder.build()
    }
}

/// The host's recorded answer to the request with this id: this status and this JSON body, no
/// headers, no error.
pub fn answer(id: &str, status: u16, body: Value) -> ApiResponse {
    answer_bytes(id, status, body.to_string())
}

/// Like [`answer`], with a body that is not JSON or is exactly these bytes (`""` for none).
pub fn answer_bytes(id: &str, status: u16, body: impl Into<Vec<u8>>) -> ApiResponse {
    ApiResponse { id: id.to_string(), status, headers: Vec::new(), body: body.into(), error: None }
}

/// The host's record of a request that got no answer after its retries: status 0 and this error.
pub fn unanswered(id: &str, error: &str) -> ApiResponse {
    ApiResponse { id: id.to_string(), status: 0, headers: Vec::new(), body: Vec::new(), error: Some(error.to_string()) }
}

/// The API requests a sync step asked for. Panics, showing the page, when it answered a page.
#[track_caller]
pub fn fetches(outcome: SyncOutcome) -> Vec<ApiRequest> {
    match outcome {
        SyncOutcome::Fetch(requests) => requests,
        SyncOutcome::Page(page) => panic!("expected the sync to fetch, it answered a page: {page:?}"),
    }
}

/// The one API request a sync step asked for. Panics when it answered a page or asked for other
/// than exactly one request.
#[track_caller]
pub fn fetch(outcome: SyncOutcome) -> ApiRequest {
    let mut requests = fetches(outcome);
    if requests.len() != 1 {
        panic!("expected the sync to fetch one request, it asked for {}: {requests:?}", requests.len());
    }
    requests.remove(0)
}

/// The page a sync step answered. Panics, showing the requests, when it asked to fetch instead.
#[track_caller]
pub fn page(outcome: SyncOutcome) -> SyncPage {
    match outcome {
        SyncOutcome::Page(page) => page,
        SyncOutcome::Fetch(requests) => panic!("expected a page, the sync asked to fetch: {requests:?}"),
    }
}

/// The API requests a registration step asked for. Panics, showing the step, otherwise.
#[track_caller]
pub fn registration_fetches(step: RegistrationStep) -> Vec<ApiRequest> {
    match step {
        RegistrationStep::Fetch(requests) => requests,
        other => panic!("expected the registration to fetch, got {other:?}"),
    }
}

/// The values a finished registration stores. Panics, showing the step, otherwise.
#[track_caller]
pub fn registration_done(step: RegistrationStep) -> Vec<(String, String)> {
    match step {
        RegistrationStep::Done(values) => values,
        other => panic!("expected the registration to be done, got {other:?}"),
    }
}

/// The first value of this query parameter of a request, if it has one.
pub fn query<'a>(request: &'a ApiRequest, name: &str) -> Option<&'a str> {
    request.query.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
}

/// Every value of this query parameter of a request, in order (`status=a&status=b`, `ids[]=…`).
pub fn query_all<'a>(request: &'a ApiRequest, name: &str) -> Vec<&'a str> {
    request.query.iter().filter(|(key, _)| key == name).map(|(_, value)| value.as_str()).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api;

    fn listed(id: &str) -> ApiRequest {
        let mut request = api::get(id, "/list");
        request.query = vec![("status".into(), "a".into()), ("page".into(), "2".into()), ("status".into(), "b".into())];
        request
    }

    #[test]
    fn a_sync_request_has_defaults_and_takes_what_the_test_sets() {
        let plain = sync_request(SyncMode::NewestFirstScan).build();
        assert_eq!((plain.account.id.as_str(), plain.account.workspace_id.as_str()), ("test", "test"));
        assert!(plain.account.settings.is_empty());
        assert_eq!((plain.mode, plain.cursor, plain.since, plain.until), (SyncMode::NewestFirstScan, None, None, None));
        assert_eq!(plain.now, "2026-01-01T00:00:00Z");
        let set: SyncRequest = sync_request(SyncMode::StayDateWindow)
            .cursor("3")
            .since("2026-05-01")
            .until(Some("2026-06-01"))
            .now("2026-05-10T00:00:00Z")
            .setting("propertyID", "7")
            .setting("propertyID", "8")
            .into();
        assert_eq!(set.cursor.as_deref(), Some("3"));
        assert_eq!((set.since.as_deref(), set.until.as_deref()), (Some("2026-05-01"), Some("2026-06-01")));
        assert_eq!(set.now, "2026-05-10T00:00:00Z");
        assert_eq!(set.account.settings, [("propertyID".to_string(), "7".to_string()), ("propertyID".to_string(), "8".to_string())]);
        let cleared = sync_request(SyncMode::ModifiedSince).cursor("x").cursor(None).settings(Vec::new()).build();
        assert_eq!(cleared.cursor, None);
    }

    #[test]
    fn a_registration_request_has_defaults_and_takes_what_the_test_sets() {
        let plain = registration_request(RegistrationAction::Register, "https://hooks.example/in/a").build();
        assert_eq!(plain.listener_url, "https://hooks.example/in/a");
        assert!(plain.registered.is_empty() && plain.responses.is_empty() && plain.account.settings.is_empty());
        let set: RegistrationRequest = registration_request(RegistrationAction::Unregister, "https://h/in/a")
            .setting("events", "booking_change")
            .registered("webhookId", "3021")
            .responses(vec![answer_bytes("delete", 204, "")])
            .into();
        assert_eq!(set.action, RegistrationAction::Unregister);
        assert_eq!(set.account.settings, [("events".to_string(), "booking_change".to_string())]);
        assert_eq!(set.registered, [("webhookId".to_string(), "3021".to_string())]);
        assert_eq!(set.responses[0].status, 204);
        let replaced = registration_request(RegistrationAction::Register, "u").registered_values(vec![("a".into(), "b".into())]).build();
        assert_eq!(replaced.registered, [("a".to_string(), "b".to_string())]);
    }

    #[test]
    fn answers_carry_the_id_status_and_body_the_plugin_reads() {
        let json = answer("list", 429, json!({"error": "slow down"}));
        assert_eq!((json.id.as_str(), json.status, json.error), ("list", 429, None));
        assert!(json.headers.is_empty());
        assert_eq!(serde_json::from_slice::<Value>(&json.body).unwrap(), json!({"error": "slow down"}));
        assert_eq!(api::successful(&answer("list", 200, json!([1]))).unwrap(), json!([1]));
        assert_eq!(answer_bytes("secret", 404, "").body, b"");
        assert_eq!(answer_bytes("secret", 200, r#"{"a":1}"#).body, br#"{"a":1}"#);
        assert_eq!(answer_bytes("raw", 200, vec![0xff]).body, [0xff]);
        let lost = unanswered("list", "connection refused");
        assert_eq!((lost.status, lost.error.as_deref()), (0, Some("connection refused")));
        assert!(api::successful(&lost).unwrap_err().contains("connection refused"));
    }

    #[test]
    fn outcomes_are_taken_apart() {
        assert_eq!(fetch(SyncOutcome::Fetch(vec![listed("list")])).id, "list");
        assert_eq!(fetches(SyncOutcome::Fetch(vec![listed("a"), listed("b")])).len(), 2);
        let more = SyncOutcome::Page(SyncPage { events: Vec::new(), next_cursor: Some("2".into()), more: true });
        assert_eq!(page(more).next_cursor.as_deref(), Some("2"));
        assert_eq!(registration_fetches(RegistrationStep::Fetch(vec![listed("register")]))[0].id, "register");
        assert_eq!(registration_done(RegistrationStep::Done(vec![("id".into(), "1".into())])), [("id".to_string(), "1".to_string())]);
    }

    #[test]
    #[should_panic(expected = "expected a page, the sync asked to fetch")]
    fn page_of_a_fetch_panics() {
        page(SyncOutcome::Fetch(vec![listed("list")]));
    }

    #[test]
    #[should_panic(expected = "expected the sync to fetch, it answered a page")]
    fn fetch_of_a_page_panics() {
        fetch(SyncOutcome::Page(SyncPage { events: Vec::new(), next_cursor: None, more: false }));
    }

    #[test]
    #[should_panic(expected = "expected the sync to fetch one request, it asked for 2")]
    fn fetch_of_two_requests_panics() {
        fetch(SyncOutcome::Fetch(vec![listed("a"), listed("b")]));
    }

    #[test]
    #[should_panic(expected = "expected the registration to be done, got RegistrationStep::Manual")]
    fn done_of_a_manual_step_panics() {
        registration_done(RegistrationStep::Manual("paste the URL".into()));
    }

    #[test]
    fn query_reads_the_first_value_and_query_all_every_value() {
        let request = listed("list");
        assert_eq!(query(&request, "status"), Some("a"));
        assert_eq!(query(&request, "page"), Some("2"));
        assert_eq!(query(&request, "missing"), None);
        assert_eq!(query_all(&request, "status"), ["a", "b"]);
        assert!(query_all(&request, "missing").is_empty());
    }

    #[test]
    fn a_json_inbound_is_a_post_for_the_test_account() {
        let inbound = json_inbound(&json!({"event": "x"}));
        assert_eq!((inbound.method.as_str(), inbound.account.id.as_str()), ("POST", "test"));
        assert_eq!(crate::json_object_body(&inbound).unwrap(), json!({"event": "x"}));
    }
}
