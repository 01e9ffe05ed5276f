//! TODO

use axum::Router;

use crate::services::AppState;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r
}
