//! The HTTP surface: router, the request extractor, responses, CORS and fallbacks.

pub mod admin;
pub mod client;
pub mod extract;
pub mod federation;

use axum::{
    Router,
    http::{HeaderValue, Method, StatusCode, header},
    response::IntoResponse,
    routing::{MethodFilter, on},
};
use ruma::api::{IncomingRequest, path_builder::PathBuilder};
use tower_http::cors::{Any, CorsLayer};

use crate::{error::Error, services::AppState};
pub use extract::{Auth, Ruma, RumaResponse};

/// Registers `handler` on every path (stable, legacy, unstable) of ruma endpoint `T`.
pub fn route<T, H, X>(router: Router<AppState>, handler: H) -> Router<AppState>
where
    T: IncomingRequest,
    H: axum::handler::Handler<X, AppState>,
    X: 'static,
{
    let filter = method_filter(&T::METHOD);
    let mut router = router;
    for path in T::PATH_BUILDER.all_paths() {
        router = router.route(path, on(filter, handler.clone()));
    }
    router
}

/// Also registers the paths of `T` without their last segment, with and without a trailing
/// slash, for endpoints whose last parameter may be empty (state keys: `/state/m.room.topic`).
pub fn route_optional_last<T, H, X>(router: Router<AppState>, handler: H) -> Router<AppState>
where
    T: IncomingRequest,
    H: axum::handler::Handler<X, AppState>,
    X: 'static,
{
    let filter = method_filter(&T::METHOD);
    let mut router = route::<T, H, X>(router, handler.clone());
    for path in T::PATH_BUILDER.all_paths() {
        if let Some((short, last)) = path.rsplit_once('/')
            && last.starts_with('{')
        {
            router = router.route(short, on(filter, handler.clone()));
            router = router.route(&format!("{short}/"), on(filter, handler.clone()));
        }
    }
    router
}

fn method_filter(m: &Method) -> MethodFilter {
    match *m {
        Method::GET => MethodFilter::GET.or(MethodFilter::HEAD),
        Method::POST => MethodFilter::POST,
        Method::PUT => MethodFilter::PUT,
        Method::DELETE => MethodFilter::DELETE,
        Method::PATCH => MethodFilter::PATCH,
        _ => MethodFilter::OPTIONS,
    }
}

pub fn router(state: AppState) -> Router {
    let max_body = state.config.limits.max_request_bytes;
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
            Method::PATCH,
        ])
        .allow_headers([
            header::ORIGIN,
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::ACCEPT,
            header::HeaderName::from_static("x-requested-with"),
        ]);
    admin::routes(client::routes(Router::new()))
        .fallback(|| async { Error::unrecognized(StatusCode::NOT_FOUND, "Unrecognized request") })
        .method_not_allowed_fallback(|| async {
            Error::unrecognized(
                StatusCode::METHOD_NOT_ALLOWED,
                "Unrecognized request method",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(cors)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            Error::internal("handler panicked").into_response()
        }))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

async fn security_headers(mut resp: axum::response::Response) -> axum::response::Response {
    let h = resp.headers_mut();
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}
