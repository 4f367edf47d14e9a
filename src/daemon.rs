//! What every part of a running daemon shares.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::config::Settings;
use crate::deliver::RetryPolicy;
use crate::metrics::Metrics;
use crate::normalize::Normalizer;
use crate::plugin::PluginRegistry;
use crate::plugin::bindings::stayhook::plugin::types::VerificationScheme;
use crate::store::{Account, Store};

/// The shared state of one running daemon. Several daemons may run in one process (tests do):
/// nothing here is global.
pub struct Daemon {
    /// Storage.
    pub store: Store,
    /// Loaded plugins.
    pub plugins: Arc<PluginRegistry>,
    /// Resolved configuration.
    pub settings: Settings,
    /// Base of listener URLs, without a trailing slash.
    pub public_url: String,
    /// The admin API's bearer token.
    pub admin_token: String,
    /// Hands stored webhooks to the normalizer threads.
    pub normalizer: Normalizer,
    /// Wakes the delivery scheduler when deliveries become due.
    pub scheduler_wakeup: Notify,
    /// The retry schedule.
    pub retry_policy: RetryPolicy,
    /// The HTTP client of deliveries.
    pub http: reqwest::Client,
    /// Counters and histograms.
    pub metrics: Metrics,
    /// Performs the API calls plugins ask for.
    pub enricher: Arc<crate::normalize::enrich::Enricher>,
    /// The tokio runtime, for work started from normalizer threads.
    pub runtime: tokio::runtime::Handle,
}

impl Daemon {
    /// The URL a PMS posts an account's webhooks to.
    pub fn listener_url(&self, account_id: &str) -> String {
        format!("{}/listen/{}", self.public_url, url_segment(account_id))
    }

    /// The listener URL to give the PMS: with the account's token when its plugin verifies by a
    /// token in the URL (the PMS then sends it back with every webhook).
    pub fn account_listener_url(&self, account: &Account) -> String {
        let url = self.listener_url(&account.id);
        let scheme = self.plugins.get(&account.pms).map(|plugin| plugin.info.verification.clone());
        match (scheme, account.verification.get("secret")) {
            (Some(VerificationScheme::UrlToken(parameter)), Some(secret)) => {
                let query: String = url::form_urlencoded::Serializer::new(String::new()).append_pair(&parameter, secret).finish();
                format!("{url}?{query}")
            }
            _ => url,
        }
    }
}

fn url_segment(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>().replace('+', "%20")
}
