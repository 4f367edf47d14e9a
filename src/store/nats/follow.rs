//! Following a bucket or a stream into a node's memory: load what is there now (bounded), then
//! apply every later change as the server sends it. The catalog and the read models
//! ([`super::view`]) stand on these two.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv};
use futures_util::StreamExt;
use tokio::task::JoinHandle;

use super::engine::{Engine, NatsError, classify};

/// How long opening waits for a bucket's or a stream's current contents.
const LOAD_BOUND: Duration = Duration::from_secs(60);

/// Apply every live entry of `kv` (each key's last, deletions included) to `apply`, then follow the
/// bucket in a task that applies each later change. Resolves once the bucket's contents as of the
/// call are applied.
pub async fn follow_bucket(
    kv: &kv::Store,
    what: &'static str,
    apply: impl Fn(kv::Entry) + Send + Sync + 'static,
) -> Result<JoinHandle<()>, NatsError> {
    let status = kv.status().await.map_err(|error| classify(&format!("reading the status of {what}"), &error))?;
    let last = status.info.state.last_sequence;
    let mut watch = kv.watch_with_history(">").await.map_err(|error| classify(&format!("watching {what}"), &error))?;
    // The watch gives each key's last entry first, the bucket's last sequence among them.
    let loaded = tokio::time::timeout(LOAD_BOUND, async {
        let mut seen = 0;
        while seen < last {
            match watch.next().await {
                Some(Ok(entry)) => {
                    seen = seen.max(entry.revision);
                    apply(entry);
                }
                Some(Err(error)) => return Err(classify(&format!("loading {what}"), &error)),
                None => return Err(NatsError::Unavailable(format!("the watch of {what} ended while loading"))),
            }
        }
        Ok(())
    })
    .await;
    match loaded {
        Ok(outcome) => outcome?,
        Err(_) => return Err(NatsError::Unavailable(format!("{what} did not load within {LOAD_BOUND:?}"))),
    }
    Ok(tokio::spawn(async move {
        while let Some(entry) = watch.next().await {
            match entry {
                Ok(entry) => apply(entry),
                Err(error) => tracing::warn!(%error, "the watch of {what}"),
            }
        }
        tracing::warn!("the watch of {what} ended: this node no longer sees other nodes' writes to it");
    }))
}

/// Apply every message of `stream` (only the headers when `headers_only`) to `apply`, in stream
/// order, then follow the stream in a task (an ordered consumer: it recreates itself on a gap).
/// Resolves once the messages stored as of the call are applied.
pub async fn follow_stream(
    engine: &Engine,
    stream_name: &'static str,
    headers_only: bool,
    apply: impl Fn(jetstream::Message) + Send + Sync + 'static,
) -> Result<JoinHandle<()>, NatsError> {
    let what = format!("following {stream_name}");
    let mut stream = engine.jetstream().get_stream(stream_name).await.map_err(|error| classify(&what, &error))?;
    let info = stream.info().await.map_err(|error| classify(&what, &error))?;
    let (n_messages, last) = (info.state.messages, info.state.last_sequence);
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig { headers_only, deliver_policy: consumer::DeliverPolicy::All, ..Default::default() })
        .await
        .map_err(|error| classify(&what, &error))?;
    let mut messages = consumer.messages().await.map_err(|error| classify(&what, &error))?;
    if n_messages > 0 {
        let loaded = tokio::time::timeout(LOAD_BOUND, async {
            loop {
                match messages.next().await {
                    Some(Ok(message)) => {
                        let done = message.info().map(|info| info.pending == 0 || info.stream_sequence >= last).unwrap_or(false);
                        apply(message);
                        if done {
                            return Ok(());
                        }
                    }
                    Some(Err(error)) => return Err(classify(&what, &error)),
                    None => return Err(NatsError::Unavailable(format!("{what}: the consumer ended while loading"))),
                }
            }
        })
        .await;
        match loaded {
            Ok(outcome) => outcome?,
            Err(_) => return Err(NatsError::Unavailable(format!("{what}: not loaded within {LOAD_BOUND:?}"))),
        }
    }
    Ok(tokio::spawn(async move {
        while let Some(message) = messages.next().await {
            match message {
                Ok(message) => apply(message),
                Err(error) => tracing::warn!(%error, "{what}"),
            }
        }
        tracing::warn!("{what} ended: this node no longer sees other nodes' writes to it");
    }))
}
