//! What the admin API shares with the rest of a running daemon.

use std::sync::Arc;

use crate::config::Settings;
use crate::health::Health;
use crate::ingest::ListenerUrls;
use crate::metrics::Metrics;
use crate::plugin::PluginRegistry;
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
    /// Where PMSs post webhooks.
    pub listener_urls: ListenerUrls,
    /// The admin API's bearer token.
    pub admin_token: String,
    /// Hands stored webhooks to the normalizer threads.
    pub normalizer: crate::normalize::Submit,
    /// The HTTP client of deliveries (test events).
    pub http: crate::deliver::Client,
    /// Counters and histograms.
    pub metrics: Arc<Metrics>,
    /// Performs the API calls plugins ask for.
    pub enricher: Arc<crate::normalize::enrich::Enricher>,
    /// `/healthz` and `/readyz`.
    pub health: Arc<Health>,
}

impl Daemon {
    /// The listener URL to give the PMS for `account` (with its token when its plugin verifies
    /// by a token in the URL).
    pub fn account_listener_url(&self, account: &Account) -> String {
        let scheme = self.plugins.get(&account.pms).map(|plugin| plugin.info.verification.clone());
        self.listener_urls.account_listener_url(account, scheme.as_ref())
    }
}
