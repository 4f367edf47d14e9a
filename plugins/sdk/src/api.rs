//! Reading the answers to API requests (enrichment, registration).
//!
//! The host has already retried 429, 5xx and connection errors before a response reaches the
//! plugin: what arrives is final.

use serde_json::Value;

use crate::model::{ApiRequest, ApiResponse};

/// A GET request with this id and path (below the API base URL the plugin declares).
pub fn get(id: &str, path: impl Into<String>) -> ApiRequest {
    ApiRequest { id: id.to_string(), method: "GET".into(), path: path.into(), query: Vec::new(), headers: Vec::new(), body: None }
}

/// The response with this request id, if the host already answered it.
pub fn response<'a>(responses: &'a [ApiResponse], id: &str) -> Option<&'a ApiResponse> {
    responses.iter().find(|response| response.id == id)
}

/// The JSON body of a successful (2xx) response, or why it failed for good.
pub fn successful(response: &ApiResponse) -> Result<Value, String> {
    successful_or_empty(response)?;
    serde_json::from_slice(&response.body).map_err(|error| format!("{} answered a body that is not JSON: {error}", response.id))
}

/// Like [`successful`], for answers whose body does not matter (a DELETE may answer 204 with none).
pub fn successful_or_empty(response: &ApiResponse) -> Result<(), String> {
    if let Some(error) = &response.error {
        return Err(format!("{} failed: {error}", response.id));
    }
    if !(200..300).contains(&response.status) {
        let text = String::from_utf8_lossy(&response.body);
        let excerpt: String = text.chars().take(200).collect();
        return Err(format!("{} answered HTTP {}: {excerpt}", response.id, response.status));
    }
    Ok(())
}
