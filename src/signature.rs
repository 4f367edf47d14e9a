//! The HMAC primitives of webhook signatures, shared by the listener's verification
//! (`ingest::verify`) and the signing of deliveries (`deliver::envelope`): Standard Webhooks keys
//! (`whsec_` + Base64) and HMAC-SHA256 over concatenated parts.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The key bytes of a `whsec_` secret.
pub fn decode_whsec(secret: &str) -> Option<Vec<u8>> {
    BASE64.decode(secret.strip_prefix("whsec_").unwrap_or(secret)).ok()
}

/// HMAC-SHA256 of the concatenated parts.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}
