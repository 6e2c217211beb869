//! The web UI: plain HTML/CSS/JavaScript embedded in the binary (no build
//! step, no CDN). Served at `/` with a strict Content-Security-Policy, so even
//! a rendering bug could not run script injected through span data; the
//! scripts themselves only ever put span text into the page via `textContent`.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// Paths of the UI's static files. They are identical in every build and hold
/// no span data, so they are served without the query token (a browser cannot
/// send one when it loads a page); every API call the page makes carries it.
pub const STATIC_ASSETS: [&str; 3] = ["/", "/ui/app.js", "/ui/app.css"];

/// True for a path of the UI's static files (see [`STATIC_ASSETS`]).
pub fn is_static_asset(path: &str) -> bool {
    STATIC_ASSETS.contains(&path)
}

/// UI routes: `/` (the single page; views are chosen by the URL fragment, so
/// every search and trace has a deep link) and its two static assets.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
}
