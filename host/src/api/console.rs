//! The operator console: one HTML page, a script and a stylesheet, embedded in the binary
//! and served on the API's listener.
//!
//! The page is a shell that holds no data and no secret: a browser cannot attach a bearer
//! header to a plain navigation, so `GET /` answers without the token (a bearer header, when
//! sent, changes nothing). Everything the page shows comes from the token-protected
//! `/api/*` endpoints, which the script calls with the admin token the operator typed into
//! its sign-in form; the token lives in the tab's `sessionStorage` only (gone when the tab
//! closes, never in a cookie, so no other site can make the browser spend it).
//!
//! Every answer carries a Content-Security-Policy that allows only this origin's script and
//! style and no inline script, so even text that slipped past the script's escaping (it
//! renders event data with `textContent` only) could not run. `no-store` keeps the page out
//! of shared caches; `nosniff` and `frame-ancestors 'none'` close the usual side doors.

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("console/index.html");
const CONSOLE_JS: &str = include_str!("console/console.js");
const CONSOLE_CSS: &str = include_str!("console/console.css");

/// Same origin only, no inline script or style, no plugins, no framing; `data:` images for
/// the empty favicon.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// `GET /`, `GET /console.js`, `GET /console.css`: open, like `/healthz` (see the module doc).
pub(super) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/console.js", get(|| async { asset("text/javascript; charset=utf-8", CONSOLE_JS) }))
        .route("/console.css", get(|| async { asset("text/css; charset=utf-8", CONSOLE_CSS) }))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers: [(HeaderName, HeaderValue); 6] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    ];
    (headers, body).into_response()
}
