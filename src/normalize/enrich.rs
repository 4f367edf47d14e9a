//! The enrichment client: API calls a plugin asked for, made by the host on the tokio runtime.
//!
//! A plugin returns `fetch(requests)`; the normalizer parks the webhook and hands the requests to
//! [`Enricher::perform`], which runs as a tokio task, never on a normalizer thread. It resolves each
//! request against the API the plugin declared (refusing any other host), adds the account's
//! credentials (API key header, bearer, basic, or an OAuth2 client-credentials token cached in the
//! store until it expires, so a restart does not spend one of the PMS's scarce token requests),
//! waits for the account's rate limit, and retries 429 (honouring `Retry-After`), 5xx and connection
//! errors. What comes back is always a response per request: a final failure is a response with
//! status 0 or the last status and an `error`, and the plugin decides what that means.
//!
//! Every request, token requests included, passes the destination policy of deliveries
//! (`http::destination`): the account's `apiBaseUrl` must use https without user info (unless
//! private destinations are allowed), IP literals are checked before sending, and names are
//! checked by the client's resolver, so no request (and no credential) reaches a loopback, private
//! or link-local address unless `allow_private_destinations` is set. A refusal fails the whole
//! round ([`EnrichError::Refused`]) without a retry.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::http::destination;
use crate::model::time::unix_ms;
use crate::plugin::bindings::stayhook::plugin::types as wit;
use crate::store::{Account, Store};

/// Longest `Retry-After` honoured; longer waits count as a failure of this attempt.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);
/// A token is renewed this long before it expires.
const TOKEN_EXPIRY_MARGIN_MS: u64 = 60_000;
/// Largest API response kept for the plugin.
const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// Why a round of enrichment could not run at all (as opposed to a request that failed, which is
/// a response with an error).
#[derive(Debug, Clone, thiserror::Error)]
pub enum EnrichError {
    /// A request the host will not make: a host the plugin did not declare, or a destination the
    /// destination policy refuses (the message says which).
    #[error("{0}")]
    Refused(String),
    /// The plugin declared no API, or a malformed one.
    #[error("{0}")]
    NoApi(String),
    /// The account lacks the credentials the auth scheme needs.
    #[error("the account has no `{0}` credential, which the plugin's auth scheme needs")]
    MissingCredential(&'static str),
    /// The OAuth2 token request failed.
    #[error("could not get an OAuth2 token: {0}")]
    Token(String),
}

/// How hard the client tries.
#[derive(Debug, Clone)]
pub struct EnrichPolicy {
    /// Delays between tries of one request (tries = 1 + the number of delays).
    pub retry_schedule: Vec<Duration>,
    /// Time limit of one HTTP request.
    pub request_timeout: Duration,
    /// Requests per second per account when the PMS has no entry in [`default_rate_per_second`].
    pub rate_per_second: u32,
    /// Whether requests may reach loopback, private and link-local addresses (test servers, a PMS
    /// sandbox on the local network); the daemon's `allow_private_destinations`.
    pub allow_private_destinations: bool,
}

/// Default requests per second per account for a PMS: deliberately below what the PMSs allow, so a
/// burst of webhooks never trips their limits (Guesty's Open API, for one, also caps requests per
/// minute and per hour). An account's `rateLimitPerSecond` overrides it.
pub fn default_rate_per_second(pms: &str, fallback: u32) -> u32 {
    match pms {
        "guesty" | "hostfully" => 2,
        "hostaway" => 1,
        _ => fallback,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CachedToken {
    access_token: String,
    expires_at_ms: u64,
}

/// Performs API requests for plugins.
pub struct Enricher {
    http: reqwest::Client,
    store: Store,
    policy: EnrichPolicy,
    limiters: std::sync::Mutex<HashMap<u32, Arc<DefaultKeyedRateLimiter<String>>>>,
    /// Listing (sync) calls' own limiters, at half an account's rate (see [`Enricher::perform_listing`]).
    listing_limiters: std::sync::Mutex<HashMap<u32, Arc<DefaultKeyedRateLimiter<String>>>>,
    /// Webhook enrichment rounds in progress per account: listing calls wait while there are any.
    foreground: Arc<std::sync::Mutex<HashMap<String, usize>>>,
    token_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

/// How often a listing call waiting for an account's webhook enrichment to finish looks again.
const LISTING_YIELD_POLL: Duration = Duration::from_millis(50);

/// Counts one webhook enrichment round of an account while it lives.
struct ForegroundRound {
    counts: Arc<std::sync::Mutex<HashMap<String, usize>>>,
    account_id: String,
}

impl ForegroundRound {
    fn start(counts: &Arc<std::sync::Mutex<HashMap<String, usize>>>, account_id: &str) -> Self {
        *counts.lock().expect("enrichment counts lock poisoned").entry(account_id.to_string()).or_default() += 1;
        Self { counts: counts.clone(), account_id: account_id.to_string() }
    }
}

impl Drop for ForegroundRound {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().expect("enrichment counts lock poisoned");
        if let Some(count) = counts.get_mut(&self.account_id) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.account_id);
            }
        }
    }
}

/// One API base as the account sees it: the plugin's declared base, or the account's override
/// (a sandbox, or a test server).
struct ApiTarget {
    declared: url::Url,
    effective: url::Url,
    allowed_hosts: Vec<String>,
    allow_private: bool,
}

impl ApiTarget {
    /// The account's API base, refused when the account's `apiBaseUrl` breaks the destination
    /// policy (checked again here: the account may predate the policy or the setting may have
    /// changed since it was stored).
    fn new(api: &wit::ApiInfo, account: &Account, allow_private: bool) -> Result<Self, EnrichError> {
        let declared = url::Url::parse(&api.base_url)
            .map_err(|error| EnrichError::NoApi(format!("the plugin's base URL {:?}: {error}", api.base_url)))?;
        let effective = match &account.api_base_url {
            Some(base) => {
                let effective =
                    url::Url::parse(base).map_err(|error| EnrichError::NoApi(format!("the account's apiBaseUrl {base:?}: {error}")))?;
                destination::check_api_base_form(&effective, allow_private)
                    .map_err(|reason| EnrichError::Refused(format!("the account's apiBaseUrl is refused: {reason}")))?;
                effective
            }
            None => declared.clone(),
        };
        Ok(Self {
            declared,
            effective,
            allowed_hosts: api.allowed_hosts.iter().map(|host| host.to_ascii_lowercase()).collect(),
            allow_private,
        })
    }

    /// The absolute URL of a request path or URL, or a refusal (a host the plugin did not declare,
    /// or an IP literal the destination policy refuses).
    fn resolve(&self, path: &str) -> Result<url::Url, EnrichError> {
        let url = self.join(path)?;
        destination::check_literal_host(&url, self.allow_private).map_err(EnrichError::Refused)?;
        Ok(url)
    }

    fn join(&self, path: &str) -> Result<url::Url, EnrichError> {
        if path.starts_with('/') {
            let mut joined = self.effective.clone();
            let base_path = self.effective.path().trim_end_matches('/');
            let (path, query) = path.split_once('?').map_or((path, None), |(path, query)| (path, Some(query)));
            joined.set_path(&format!("{base_path}{path}"));
            joined.set_query(query);
            return Ok(joined);
        }
        let url =
            url::Url::parse(path).map_err(|_| EnrichError::Refused(format!("the plugin asked for {path:?}, neither a path nor a URL")))?;
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        if url.origin() == self.declared.origin() {
            // The declared API itself, written absolutely: rebase onto the effective base.
            let mut rebased = self.effective.clone();
            rebased.set_path(url.path());
            rebased.set_query(url.query());
            return Ok(rebased);
        }
        if url.origin() == self.effective.origin() || (url.scheme() == "https" && self.allowed_hosts.contains(&host)) {
            return Ok(url);
        }
        Err(EnrichError::Refused(format!("the plugin asked for {host}, a host it did not declare")))
    }
}

impl Enricher {
    /// A client of its own (the delivery client's connection pool and limits do not apply: the
    /// PMS API is a known, declared host), behind the same destination policy as deliveries.
    pub fn new(store: Store, policy: EnrichPolicy) -> reqwest::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(policy.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("stayhook/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(destination::GuardedResolver { allow_private: policy.allow_private_destinations }))
            .build()?;
        Ok(Self {
            http,
            store,
            policy,
            limiters: std::sync::Mutex::new(HashMap::new()),
            listing_limiters: std::sync::Mutex::new(HashMap::new()),
            foreground: Arc::new(std::sync::Mutex::new(HashMap::new())),
            token_locks: Mutex::new(HashMap::new()),
        })
    }

    /// [`Enricher::perform`] for a sync pass's listing calls, which must never starve webhook
    /// enrichment of the same account: each request first waits until no webhook enrichment round
    /// of the account is in progress, then takes a turn of a second limiter at half the account's
    /// rate, then the account's limiter like any request. So listing uses at most half the
    /// account's budget and yields to webhooks that wait; 429 and `Retry-After` are honoured the
    /// same way.
    pub async fn perform_listing(
        self: &Arc<Self>,
        account: &Account,
        api: Option<&wit::ApiInfo>,
        requests: Vec<wit::ApiRequest>,
    ) -> Result<Vec<wit::ApiResponse>, EnrichError> {
        let per_second = self.rate_per_second(account);
        let limiter = {
            let mut limiters = self.listing_limiters.lock().expect("rate limiter map lock poisoned");
            limiters
                .entry(per_second)
                .or_insert_with(|| {
                    // Half the account's rate: one request per two of its periods.
                    let period = Duration::from_secs(2) / per_second;
                    Arc::new(RateLimiter::keyed(Quota::with_period(period).unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))))
                })
                .clone()
        };
        for _ in 0..requests.len() {
            while self.foreground.lock().expect("enrichment counts lock poisoned").contains_key(&account.id) {
                tokio::time::sleep(LISTING_YIELD_POLL).await;
            }
            limiter.until_key_ready(&account.id).await;
        }
        self.perform_round(account, api, requests).await
    }

    /// Perform one round of requests for `account` against the API `api` declares. Requests run
    /// concurrently; the answer holds one response per request, in order. A request the
    /// destination policy refuses fails the round.
    pub async fn perform(
        self: &Arc<Self>,
        account: &Account,
        api: Option<&wit::ApiInfo>,
        requests: Vec<wit::ApiRequest>,
    ) -> Result<Vec<wit::ApiResponse>, EnrichError> {
        let _round = ForegroundRound::start(&self.foreground, &account.id);
        self.perform_round(account, api, requests).await
    }

    async fn perform_round(
        self: &Arc<Self>,
        account: &Account,
        api: Option<&wit::ApiInfo>,
        requests: Vec<wit::ApiRequest>,
    ) -> Result<Vec<wit::ApiResponse>, EnrichError> {
        let api = api.ok_or_else(|| EnrichError::NoApi("the plugin asked for API calls but declares no API".into()))?;
        let target = ApiTarget::new(api, account, self.policy.allow_private_destinations)?;
        let urls = requests.iter().map(|request| target.resolve(&request.path)).collect::<Result<Vec<_>, _>>()?;
        let auth = self.authorization(account, api, &target).await?;
        let mut tasks = tokio::task::JoinSet::new();
        for (idx, (request, url)) in requests.into_iter().zip(urls).enumerate() {
            let enricher = self.clone();
            let auth = auth.clone();
            let account = account.clone();
            let api = api.clone();
            let target_effective = target.effective.clone();
            tasks.spawn(async move {
                let response = enricher.send_with_retries(&account, &api, &target_effective, &request, url, auth).await;
                (idx, response)
            });
        }
        let mut responses: Vec<Option<wit::ApiResponse>> = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (idx, response) = joined.map_err(|error| EnrichError::NoApi(format!("an API task failed: {error}")))?;
            if responses.len() <= idx {
                responses.resize(idx + 1, None);
            }
            responses[idx] = Some(response?);
        }
        Ok(responses.into_iter().flatten().collect())
    }

    async fn send_with_retries(
        &self,
        account: &Account,
        api: &wit::ApiInfo,
        effective_base: &url::Url,
        request: &wit::ApiRequest,
        url: url::Url,
        mut auth: Option<(String, String)>,
    ) -> Result<wit::ApiResponse, EnrichError> {
        let n_tries = self.policy.retry_schedule.len() + 1;
        let mut last = failure(&request.id, 0, "not attempted".into());
        let mut refreshed_token = false;
        for try_idx in 0..n_tries {
            self.rate_limit(account).await;
            let outcome = self.send(request, &url, auth.as_ref()).await;
            let retry_after = match outcome {
                Ok(response)
                    if response.status == 401 && !refreshed_token && matches!(api.auth, wit::AuthScheme::Oauth2ClientCredentials(_)) =>
                {
                    // The cached token may have been revoked: drop it and try once with a new one.
                    refreshed_token = true;
                    self.forget_token(&account.id).await;
                    let target = ApiTarget {
                        declared: url::Url::parse(&api.base_url).unwrap_or_else(|_| effective_base.clone()),
                        effective: effective_base.clone(),
                        allowed_hosts: Vec::new(),
                        allow_private: self.policy.allow_private_destinations,
                    };
                    match self.authorization(account, api, &target).await {
                        Ok(fresh) => auth = fresh,
                        Err(error @ EnrichError::Refused(_)) => return Err(error),
                        Err(error) => return Ok(failure(&request.id, 401, error.to_string())),
                    }
                    last = response;
                    continue;
                }
                Ok(response) if response.status == 429 || response.status >= 500 => {
                    let wait = retry_after(&response.headers);
                    last = response;
                    wait
                }
                Ok(response) => return Ok(response),
                Err(SendError::Refused(reason)) => return Err(EnrichError::Refused(reason)),
                Err(SendError::Failed(error)) => {
                    last = failure(&request.id, 0, error);
                    None
                }
            };
            let Some(delay) = self.policy.retry_schedule.get(try_idx) else { break };
            let delay = match retry_after {
                Some(wait) if wait <= MAX_RETRY_AFTER => wait.max(*delay),
                _ => *delay,
            };
            tokio::time::sleep(delay).await;
        }
        if last.error.is_none() {
            last.error = Some(format!("gave up after {n_tries} tries; last status {}", last.status));
        }
        Ok(last)
    }

    async fn send(
        &self,
        request: &wit::ApiRequest,
        url: &url::Url,
        auth: Option<&(String, String)>,
    ) -> Result<wit::ApiResponse, SendError> {
        let method = reqwest::Method::from_bytes(request.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| SendError::Failed(format!("bad method {:?}", request.method)))?;
        let mut builder = self.http.request(method, url.clone()).query(&request.query);
        for (name, value) in &request.headers {
            if !name.eq_ignore_ascii_case("authorization") {
                builder = builder.header(name, value);
            }
        }
        if let Some((name, value)) = auth {
            builder = builder.header(name, value);
        }
        if let Some(body) = &request.body {
            builder = builder.body(body.clone());
        }
        let response = builder.send().await.map_err(|error| match destination::refusal_in(&error) {
            Some(reason) => SendError::Refused(reason),
            None if error.is_timeout() => SendError::Failed("timed out".to_string()),
            None => SendError::Failed(error.to_string()),
        })?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(name, value)| Some((name.as_str().to_string(), value.to_str().ok()?.to_string())))
            .collect();
        let body = response.bytes().await.map_err(|error| SendError::Failed(error.to_string()))?;
        if body.len() > MAX_RESPONSE_BYTES {
            return Err(SendError::Failed(format!("response of {} bytes is larger than {MAX_RESPONSE_BYTES}", body.len())));
        }
        Ok(wit::ApiResponse { id: request.id.clone(), status, headers, body: body.to_vec(), error: None })
    }

    fn rate_per_second(&self, account: &Account) -> u32 {
        account.rate_limit_per_second.unwrap_or_else(|| default_rate_per_second(&account.pms, self.policy.rate_per_second)).max(1)
    }

    async fn rate_limit(&self, account: &Account) {
        let per_second = self.rate_per_second(account);
        let limiter = {
            let mut limiters = self.limiters.lock().expect("rate limiter map lock poisoned");
            limiters
                .entry(per_second)
                .or_insert_with(|| Arc::new(RateLimiter::keyed(Quota::per_second(NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN)))))
                .clone()
        };
        limiter.until_key_ready(&account.id).await;
    }

    /// The header that authenticates this account's requests, if the scheme has one.
    async fn authorization(
        &self,
        account: &Account,
        api: &wit::ApiInfo,
        target: &ApiTarget,
    ) -> Result<Option<(String, String)>, EnrichError> {
        let credential = |name: &'static str| account.credentials.get(name).cloned().ok_or(EnrichError::MissingCredential(name));
        Ok(match &api.auth {
            wit::AuthScheme::None => None,
            wit::AuthScheme::ApiKeyHeader(header) => Some((header.clone(), credential("apiKey")?)),
            wit::AuthScheme::Bearer => Some(("authorization".into(), format!("Bearer {}", credential("token")?))),
            wit::AuthScheme::Basic => {
                use base64::Engine as _;
                let pair = format!("{}:{}", credential("username")?, credential("password")?);
                Some(("authorization".into(), format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))))
            }
            wit::AuthScheme::Oauth2ClientCredentials(client) => {
                let token = self.oauth_token(account, client, target, credential("clientId")?, credential("clientSecret")?).await?;
                Some(("authorization".into(), format!("Bearer {token}")))
            }
        })
    }

    async fn oauth_token(
        &self,
        account: &Account,
        client: &wit::Oauth2Client,
        target: &ApiTarget,
        client_id: String,
        client_secret: String,
    ) -> Result<String, EnrichError> {
        // One token request per account at a time: concurrent webhooks share its result.
        let lock = self.token_locks.lock().await.entry(account.id.clone()).or_default().clone();
        let _held = lock.lock().await;
        if let Some(token) = self.cached_token(&account.id) {
            return Ok(token);
        }
        let token_url = target.resolve(&client.token_url).map_err(|error| match error {
            refused @ EnrichError::Refused(_) => refused,
            other => EnrichError::Token(other.to_string()),
        })?;
        let mut form = vec![("grant_type", "client_credentials".to_string()), ("client_id", client_id), ("client_secret", client_secret)];
        if let Some(scope) = &client.scope {
            form.push(("scope", scope.clone()));
        }
        self.rate_limit(account).await;
        let response = self.http.post(token_url).header("accept", "application/json").form(&form).send().await.map_err(|error| {
            match destination::refusal_in(&error) {
                Some(reason) => EnrichError::Refused(reason),
                None => EnrichError::Token(error.to_string()),
            }
        })?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.map_err(|error| EnrichError::Token(format!("HTTP {status}: {error}")))?;
        let access_token = body["access_token"]
            .as_str()
            .filter(|_| status.is_success())
            .ok_or_else(|| EnrichError::Token(format!("HTTP {status}: {body}")))?;
        let expires_in_secs =
            body["expires_in"].as_u64().or_else(|| body["expires_in"].as_str().and_then(|text| text.parse().ok())).unwrap_or(3600);
        let cached = CachedToken { access_token: access_token.to_string(), expires_at_ms: unix_ms() + expires_in_secs * 1000 };
        if let Err(error) = self.store.insert_meta(&token_key(&account.id), &serde_json::to_string(&cached).unwrap_or_default()).await {
            tracing::warn!(%error, account = %account.id, "could not cache the OAuth2 token; the next restart will ask for a new one");
        }
        tracing::info!(account = %account.id, expires_in_secs, "obtained an OAuth2 token");
        Ok(cached.access_token)
    }

    fn cached_token(&self, account_id: &str) -> Option<String> {
        let text = self.store.get_meta(&token_key(account_id)).ok()??;
        let cached: CachedToken = serde_json::from_str(&text).ok()?;
        (cached.expires_at_ms > unix_ms() + TOKEN_EXPIRY_MARGIN_MS).then_some(cached.access_token)
    }

    async fn forget_token(&self, account_id: &str) {
        if let Err(error) = self.store.remove_meta(&token_key(account_id)).await {
            tracing::warn!(%error, "could not drop a cached token");
        }
    }
}

/// Why one HTTP request failed.
enum SendError {
    /// The destination policy refused its address: not retried.
    Refused(String),
    /// Anything else (connection, timeout, a body too large): retried.
    Failed(String),
}

fn token_key(account_id: &str) -> String {
    format!("oauth2-token/{account_id}")
}

fn failure(id: &str, status: u16, error: String) -> wit::ApiResponse {
    wit::ApiResponse { id: id.to_string(), status, headers: Vec::new(), body: Vec::new(), error: Some(error) }
}

/// `Retry-After` in seconds or as an HTTP date.
fn retry_after(headers: &[(String, String)]) -> Option<Duration> {
    let value = headers.iter().find(|(name, _)| name.eq_ignore_ascii_case("retry-after"))?.1.trim().to_string();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = chrono::DateTime::parse_from_rfc2822(&value).ok()?;
    let wait_ms = when.timestamp_millis() - chrono::Utc::now().timestamp_millis();
    Some(Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(override_base: Option<&str>) -> Account {
        Account {
            id: "a".into(),
            workspace_id: "w".into(),
            pms: "p".into(),
            name: None,
            credentials: Default::default(),
            verification: Default::default(),
            settings: Default::default(),
            api_base_url: override_base.map(String::from),
            rate_limit_per_second: None,
            registration: Default::default(),
            reconcile_interval_secs: None,
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    fn api(base: &str, allowed: &[&str], auth: wit::AuthScheme) -> wit::ApiInfo {
        wit::ApiInfo { base_url: base.into(), allowed_hosts: allowed.iter().map(|host| host.to_string()).collect(), auth }
    }

    fn target(base: &str, override_base: Option<&str>, allowed: &[&str]) -> ApiTarget {
        ApiTarget::new(&api(base, allowed, wit::AuthScheme::None), &account(override_base), true).unwrap()
    }

    #[test]
    fn paths_join_the_base_and_foreign_hosts_are_refused() {
        let api = target("https://api.hostaway.com", None, &["files.hostaway.com"]);
        assert_eq!(api.resolve("/v1/reservations/13").unwrap().as_str(), "https://api.hostaway.com/v1/reservations/13");
        assert_eq!(api.resolve("https://files.hostaway.com/a.pdf").unwrap().as_str(), "https://files.hostaway.com/a.pdf");
        assert!(
            matches!(api.resolve("https://evil.example.com/steal"), Err(EnrichError::Refused(reason)) if reason.contains("evil.example.com"))
        );
        assert!(matches!(api.resolve("http://files.hostaway.com/a.pdf"), Err(EnrichError::Refused(_))), "allowed hosts need https");
    }

    #[test]
    fn an_account_override_rebases_the_declared_api() {
        let api = target("https://open-api.guesty.com", Some("http://127.0.0.1:9999/guesty"), &[]);
        assert_eq!(api.resolve("/v1/reservations/x").unwrap().as_str(), "http://127.0.0.1:9999/guesty/v1/reservations/x");
        assert_eq!(api.resolve("https://open-api.guesty.com/oauth2/token").unwrap().as_str(), "http://127.0.0.1:9999/oauth2/token");
    }

    #[test]
    fn the_destination_policy_applies_to_the_account_base_and_to_literal_hosts() {
        let guesty = api("https://open-api.guesty.com", &[], wit::AuthScheme::None);
        for (base, why) in
            [("http://api.example.com", "http carries the credentials in clear text"), ("https://user:pw@api.example.com", "user info")]
        {
            let refused = ApiTarget::new(&guesty, &account(Some(base)), false).err();
            assert!(matches!(refused, Some(EnrichError::Refused(_))), "{base}: {why}");
        }
        for base in ["https://127.0.0.1:9999", "https://169.254.169.254/latest", "https://[::1]/"] {
            let target = ApiTarget::new(&guesty, &account(Some(base)), false).unwrap();
            assert!(matches!(target.resolve("/v1/reservations/x"), Err(EnrichError::Refused(_))), "{base}");
        }
        let with_literal_host = api("https://open-api.guesty.com", &["10.0.0.7"], wit::AuthScheme::None);
        let target = ApiTarget::new(&with_literal_host, &account(None), false).unwrap();
        assert!(matches!(target.resolve("https://10.0.0.7/files/a.pdf"), Err(EnrichError::Refused(_))), "allowed hosts too");
        let target = ApiTarget::new(&with_literal_host, &account(None), true).unwrap();
        assert!(target.resolve("https://10.0.0.7/files/a.pdf").is_ok(), "unless private destinations are allowed");
    }

    /// A name that resolves to loopback passes the literal checks; the client's resolver must
    /// refuse it before a connection is made, for API calls and for the OAuth2 token request.
    #[tokio::test]
    async fn names_resolving_to_loopback_are_refused_before_connecting() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(dir.path(), 1 << 20).unwrap();
        let policy = EnrichPolicy {
            retry_schedule: vec![Duration::from_millis(1)],
            request_timeout: Duration::from_secs(5),
            rate_per_second: 100,
            allow_private_destinations: false,
        };
        let enricher = Arc::new(Enricher::new(store, policy).unwrap());
        let mut account = account(Some(&format!("https://localhost:{port}")));
        account.credentials.insert("clientId".into(), "id".into());
        account.credentials.insert("clientSecret".into(), "the-secret".into());
        let request =
            wit::ApiRequest { id: "r".into(), method: "GET".into(), path: "/x".into(), query: Vec::new(), headers: Vec::new(), body: None };
        let plain = api("https://api.chaos.invalid", &[], wit::AuthScheme::None);
        let answer = enricher.perform(&account, Some(&plain), vec![request.clone()]).await;
        assert!(matches!(&answer, Err(EnrichError::Refused(reason)) if reason.contains("localhost")), "{answer:?}");
        let oauth = api(
            "https://api.chaos.invalid",
            &[],
            wit::AuthScheme::Oauth2ClientCredentials(wit::Oauth2Client {
                token_url: "https://api.chaos.invalid/oauth/token".into(),
                scope: None,
            }),
        );
        let answer = enricher.perform(&account, Some(&oauth), vec![request]).await;
        assert!(matches!(&answer, Err(EnrichError::Refused(reason)) if reason.contains("localhost")), "{answer:?}");
        assert!(
            matches!(listener.accept(), Err(error) if error.kind() == std::io::ErrorKind::WouldBlock),
            "nothing connected to the loopback listener"
        );
    }

    #[test]
    fn retry_after_in_seconds() {
        assert_eq!(retry_after(&[("Retry-After".into(), "3".into())]), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(&[]), None);
    }
}
