//! What every part of a running daemon shares.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::config::Settings;
use crate::deliver::RetryPolicy;
use crate::metrics::Metrics;
use crate::normalize::Normalizer;
use crate::plugin::PluginRegistry;
use crate::store::Store;

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
}

impl Daemon {
    /// The URL a PMS posts an account's webhooks to.
    pub fn listener_url(&self, account_id: &str) -> String {
        format!("{}/listen/{}", self.public_url, url_segment(account_id))
    }
}

fn url_segment(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>().replace('+', "%20")
}
