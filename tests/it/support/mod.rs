//! The harness: a real daemon process and a real receiving HTTP server.

mod daemon;
mod nats;
mod pms;
mod receiver;

pub use daemon::{Daemon, DaemonOptions, TestStore, test_store};
pub use nats::NatsCluster;
pub use pms::FakePms;
pub use receiver::{Received, Receiver};

use std::path::PathBuf;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A seed example from `tests/fixtures/seed`: the specification's examples (Calry's and Guesty's
/// documented payloads; the README there gives their public addresses).
pub fn seed_example(name: &str) -> serde_json::Value {
    let path = repo_root().join("tests").join("fixtures").join("seed").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("parsing {}: {error}", path.display()))
}

/// A Hostaway golden-case body.
pub fn hostaway_body(case: &str) -> Vec<u8> {
    let path = repo_root().join("plugins/hostaway/tests/cases").join(case).join("body.json");
    std::fs::read(&path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
}
