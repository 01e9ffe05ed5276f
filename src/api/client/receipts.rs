//! Receipts and read markers: `POST /rooms/{roomId}/receipt/{receiptType}/{eventId}` and
//! `POST /rooms/{roomId}/read_markers`.

use axum::{Json, Router, extract::State};
use ruma::api::client::{read_marker::set_read_marker, receipt::create_receipt};
use serde_json::json;

use super::JsonResult;
use crate::{
    api::{Ruma, route},
    rooms::receipts::{ReceiptKind, parse_thread, set_receipt},
    services::AppState,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route::<create_receipt::v3::Request, _, _>(r, receipt);
    route::<set_read_marker::v3::Request, _, _>(r, read_markers)
}

async fn receipt(State(s): State<AppState>, req: Ruma<create_receipt::v3::Request>) -> JsonResult {
    let a = req.user()?;
    let kind = ReceiptKind::parse(req.body.receipt_type.as_str())?;
    let thread = parse_thread(req.body.thread.as_str())?;
    set_receipt(
        &s,
        req.body.room_id.as_str(),
        a.user_id.as_str(),
        kind,
        req.body.event_id.as_str(),
        &thread,
    )
    .await?;
    Ok(Json(json!({})))
}

async fn read_markers(
    State(s): State<AppState>,
    req: Ruma<set_read_marker::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    let b = &req.body;
    for (kind, event_id) in [
        (ReceiptKind::FullyRead, &b.fully_read),
        (ReceiptKind::Read, &b.read_receipt),
        (ReceiptKind::ReadPrivate, &b.private_read_receipt),
    ] {
        if let Some(event_id) = event_id {
            set_receipt(
                &s,
                b.room_id.as_str(),
                a.user_id.as_str(),
                kind,
                event_id.as_str(),
                "",
            )
            .await?;
        }
    }
    Ok(Json(json!({})))
}
