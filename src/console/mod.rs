//! The operator console: three static files embedded in the binary and served on the admin
//! listener (`/`, `/console/app.js`, `/console/app.css`). The page is a small hand-written
//! JavaScript client of the documented admin API: it signs in through `POST /v1/session` and
//! then calls the same JSON routes curl users call, with the same errors. It never reads the
//! store.
//!
//! Why a vanilla script and not server-rendered HTML: the issue asks for a client of the API, and
//! a second code path rendering the store into HTML would be exactly what it forbids; a vanilla
//! script needs no Node toolchain, no new crate and no build step, and the three files weigh a
//! few tens of kilobytes. The Content-Security-Policy below allows nothing but this origin, so
//! the page cannot load a font, a script or an image from anywhere else, nor call anywhere else.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// What the console's pages may load and call: this origin only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes (no authentication: the files hold no data; every datum comes from the
/// API, which requires a session or the token).
pub fn routes() -> Router {
    Router::new()
        .route("/", get(|| async { page("text/html; charset=utf-8", INDEX) }))
        .route("/console/app.js", get(|| async { page("text/javascript; charset=utf-8", APP_JS) }))
        .route("/console/app.css", get(|| async { page("text/css; charset=utf-8", APP_CSS) }))
}

fn page(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// The size in bytes of everything the console's first page load fetches (page weight).
pub fn page_weight() -> usize {
    INDEX.len() + APP_JS.len() + APP_CSS.len()
}
