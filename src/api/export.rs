//! `GET /v1/export`: the backup export (`crate::backup`, `docs/export-format.md`) of a running
//! daemon, streamed as it is read, so a backup needs no downtime.

use std::io::Write;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http_body_util::channel::{Channel, Sender};

use super::ApiContext;
use crate::backup::export::{ExportError, ExportOptions, check_accounts, export_blocking};
use crate::http::ApiError;

/// Bytes gathered before a chunk goes to the client.
const CHUNK: usize = 64 * 1024;

pub(super) fn routes() -> Router<Arc<ApiContext>> {
    Router::new().route("/v1/export", get(export))
}

fn options(query: Option<&str>) -> Result<ExportOptions, ApiError> {
    let mut options = ExportOptions { webhooks: true, ..ExportOptions::default() };
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match name.as_ref() {
            "account" => options.accounts.extend(value.split(',').filter(|id| !id.is_empty()).map(String::from)),
            "webhooks" => {
                options.webhooks = match value.as_ref() {
                    "true" => true,
                    "false" => false,
                    other => return Err(ApiError::bad_request("invalid_webhooks", format!("webhooks is true or false, not {other:?}"))),
                }
            }
            "since" => {
                let since = crate::backup::offline::parse_since(&value)
                    .map_err(|error| ApiError::bad_request("invalid_since", error.to_string()))?;
                options.since_ms = Some(since);
            }
            other => {
                return Err(ApiError::bad_request("invalid_parameter", format!("unknown parameter {other:?} (account, webhooks, since)")));
            }
        }
    }
    Ok(options)
}

async fn export(State(daemon): State<Arc<ApiContext>>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let options = options(query.as_deref())?;
    let store = daemon.store.clone();
    let accounts = options.accounts.clone();
    match tokio::task::spawn_blocking(move || check_accounts(store.as_ref(), &accounts)).await.map_err(ApiError::internal)? {
        Ok(()) => {}
        Err(ExportError::UnknownAccount(account)) => {
            return Err(ApiError::not_found("account_not_found", format!("no account {account:?}")));
        }
        Err(ExportError::Store(error)) => return Err(error.into()),
        Err(error) => return Err(ApiError::internal(error)),
    }
    let (sender, body) = Channel::<Bytes, std::io::Error>::new(4);
    let store = daemon.store.clone();
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter { sender: Some(sender), runtime, buffer: Vec::with_capacity(CHUNK) };
        match export_blocking(store.as_ref(), &options, &mut out, &mut |_| {})
            .and_then(|counts| out.flush().map(|()| counts).map_err(Into::into))
        {
            Ok(counts) => tracing::info!(%counts, "exported through the admin API"),
            Err(error) => {
                tracing::warn!(%error, "an export through the admin API stopped; its body is cut short (no `end` line)");
                if let Some(sender) = out.sender.take() {
                    sender.abort(std::io::Error::other(error.to_string()));
                }
            }
        }
    });
    let filename = format!("attachment; filename=\"stayhook-export-{}.ndjson\"", crate::model::time::now().replace(':', ""));
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/x-ndjson".to_string()),
            (header::CONTENT_DISPOSITION, filename),
            (header::CACHE_CONTROL, "no-store".into()),
        ],
        Body::new(body),
    )
        .into_response())
}

/// `Write` into the response body from a blocking thread: chunks of [`CHUNK`] bytes, each sent
/// once the client has taken the ones before (the channel holds a few), so a slow client slows
/// the export instead of filling memory.
struct ChannelWriter {
    sender: Option<Sender<Bytes, std::io::Error>>,
    runtime: tokio::runtime::Handle,
    buffer: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK)));
        let sender = self.sender.as_mut().ok_or_else(|| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        self.runtime
            .block_on(sender.send_data(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CHUNK {
            self.send()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}
