//! The integration suite: one binary (wasmtime makes every extra test binary expensive to link).
//!
//! Every test starts the real `stayhook` binary on ephemeral loopback ports with its own temp data
//! dir, and talks to it like an operator and a PMS would: the admin API, the listener, and a real
//! HTTP receiver for deliveries. Nothing of the daemon is mocked.
//!
//! Modules by feature:
//! - `admin_api`: accounts and webhooks CRUD, auth, validation errors, verification secrets and
//!   `apiBaseUrl` refused by the destination policy.
//! - `admin_lists`: every list route pages (`limit`, `after`, `next`) within its byte budget.
//! - `ingest`: listener errors (404, 413, 400, 401), basic auth, duplicates.
//! - `deliver`: seed fidelity of the envelope, Standard Webhooks signatures, created/updated/deleted,
//!   previous dates, unchanged updates, per-record ordering.
//! - `retry`: failing receivers, attempts log, dead letters, redelivery.
//! - `restart`: SIGKILL after the 2xx, recovery of normalization and delivery.
//! - `retention`: the pruner deletes delivered events and raw webhooks past retention (404 `expired`),
//!   keeps state and pending deliveries, shows in `/metrics` and `/v1/storage`; account deletion deletes data.
//! - `plugins`: misbehaving plugins (trap, loop, memory, invalid output) fail only their events.
//! - `sandbox`: hostile components (a start function that never returns, memories over the cap
//!   together) are refused on upload, in the plugin dir and by `plugin run`; the daemon stays up.
//! - `enrich`: API calls for thin webhooks against a fake PMS API: OAuth2, 429, outages, refusals, registration.
//! - `cloudbeds_hostex`: Cloudbeds and Hostex verification, bad input through the daemon, Cloudbeds registration.
//! - `pms_replay`: golden cases with API calls, replayed end to end against a local server serving the recorded responses
//!   (an SNS plugin's case body goes in a signed SNS notification).
//! - `golden`: every plugin's golden cases through the real wasm plugin and the host renderer.
//! - `cli`: `stayhook plugin run`.
//! - `sns`: Amazon SNS deliveries verified, confirmed and unwrapped, against a local certificate host.
//! - `smily_hostify`: Smily's HMAC-SHA1-over-Base64 signature and bad input through the daemon; a
//!   Hostify reservation through a signed SNS notification, the handshake, and the API completion.
//! - `sync`: initial sync and reconciliation through the chaos plugin against a fake PMS's list:
//!   missed changes delivered once and marked, nothing twice, a silent initial sync of 1,000
//!   records, resume at the stored cursor after SIGKILL, 429 honoured, a list API that stays down,
//!   webhook enrichment going ahead of a running sync.
//! - `contract`: a v0.1 component through the conversion layer; a v0.2 sync pass offline.
//! - `console`: the operator console in a real headless Chromium (WebDriver through chromedriver):
//!   sign-in, forms, the delivery story, playground, sign-out; sessions and CSRF through the API.
//! - `plugin_crates`: the plugins' native unit tests (`cargo test` in `plugins/`).
//! - `slow_clients`: connection caps, header/body/idle timeouts, JSON on every error, private data dir.
//! - `faults`: the fault suite (RELIABILITY.md): repeated SIGKILL under load with racing retries,
//!   SIGKILL right after a `duplicate` answer, a receiver outage across a SIGKILL, a full disk,
//!   SIGTERM under load, dead letters holding their record's lane; `STAYHOOK_FAULT_SCALE` runs it larger.
//! - `upgrade`: a data dir written by the previous release (`tests/fixtures/datadir-v1`) opens with everything in it.
//! - `jetstream_engine`: the NATS JetStream mechanisms the NATS backend (issue 14) will stand on,
//!   against a real 3-node cluster (`support::NatsCluster`, the server from `.ci/nats-server`):
//!   `Nats-Msg-Id` duplicates across a stream leader's SIGKILL, a pinned pull client and its
//!   failover, KV compare-and-set, backoff and max deliveries with their advisory.
//! - `nats_catalog`: the catalog on JetStream (`store::nats::NatsCatalog`), two nodes' catalogs on a
//!   real 3-node cluster: each other's writes, one creation of an id, compare-and-set of values.
//! - `nats_engine_layer`: the NATS backend's engine layer (`store::nats`) on a real 3-node cluster:
//!   provisioning from nodes starting at once, appends deduplicated and kept across a SIGKILL of
//!   the inbox leader, the partition feed's per-account order across nodes, a drainer's death
//!   mid-batch and a drainer that lost its pin.
//! - `on_nats`: the shared modules again, every daemon on a NATS server of its own
//!   (`STAYHOOK_TEST_STORE=nats`, the test binary run as a child process).
//! - `listener_fuzz`: a seeded property test of the listener and verification over random
//!   methods, paths, queries, headers and bodies, for every verification scheme.

mod support;

mod admin_api;
mod admin_lists;
mod backup;
mod cli;
mod cloudbeds_hostex;
mod console;
mod contract;
mod deliver;
mod enrich;
mod faults;
mod golden;
mod hot_reload;
mod igms_uplisting;
mod ingest;
mod jetstream_engine;
mod kit;
mod listener_fuzz;
mod nats_catalog;
mod nats_engine_layer;
mod nats_store;
mod on_nats;
mod plugin_crates;
mod plugins;
mod pms_replay;
mod restart;
mod retention;
mod retry;
mod sandbox;
mod scale_out;
mod slow_clients;
mod smily_hostify;
mod sns;
mod sync;
mod upgrade;
