//! `GET /v1/ws`: live status over WebSocket, each user seeing only their own instances.
//!
//! Frames are JSON text:
//! - `{"type":"snapshot","instances":[{"id","name","kind","status"}...]}` first, and again after
//!   the client lagged;
//! - `{"type":"status","instance_id","status","event","at"}` for each change of the user's
//!   instances;
//! - `{"type":"lagged","missed":n}` when the client fell behind and updates were dropped for
//!   it (a fresh snapshot follows);
//! - `{"type":"error","message"}` before the server closes the socket on a failure.
//!
//! The caller is the [`Principal`] the auth layer put in the request extensions; a request
//! without one gets 401 with a JSON error.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use iaas_core::{InstanceRepository, Principal, UserId};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use crate::live::{LiveStatus, StatusUpdate};

#[derive(Clone)]
struct LiveState {
    live: LiveStatus,
    repo: Arc<dyn InstanceRepository>,
}

/// The router serving `GET /v1/ws`.
pub fn live_router(live: LiveStatus, repo: Arc<dyn InstanceRepository>) -> Router {
    Router::new().route("/v1/ws", get(upgrade)).with_state(LiveState { live, repo })
}

async fn upgrade(
    State(state): State<LiveState>,
    principal: Option<Extension<Principal>>,
    socket: WebSocketUpgrade,
) -> Response {
    let Some(Extension(principal)) = principal else {
        let body = json!({"error": {"code": "unauthenticated", "message": "a valid access token is required"}});
        return (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    };
    socket.on_upgrade(move |socket| serve(socket, principal.user_id, state))
}

async fn serve(mut socket: WebSocket, user: UserId, state: LiveState) {
    // Watch before the snapshot, so nothing that changes in between is missed.
    let mut updates = state.live.watch();
    if send_snapshot(&mut socket, user, &state).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            update = updates.recv() => {
                let frame = match update {
                    // Serialized once for every client (`LiveUpdate::new`): a clone shares it.
                    Ok(update) if update.is_for(user) => update.frame().clone(),
                    Ok(_) => continue,
                    Err(RecvError::Lagged(missed)) => {
                        tracing::debug!(%user, missed, "live status client lagged");
                        if send(&mut socket, &json!({"type": "lagged", "missed": missed})).await.is_err()
                            || send_snapshot(&mut socket, user, &state).await.is_err()
                        {
                            return;
                        }
                        continue;
                    }
                    Err(RecvError::Closed) => return,
                };
                if socket.send(Message::Text(frame)).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                // Pings are answered by the WebSocket layer; clients have nothing else to say.
                Some(Ok(_)) => {}
            },
        }
    }
}

async fn send_snapshot(socket: &mut WebSocket, user: UserId, state: &LiveState) -> Result<(), ()> {
    match state.repo.list_instances_by_owner(user).await {
        Ok(instances) => {
            let instances: Vec<_> = instances
                .iter()
                .map(|i| json!({"id": i.id, "name": i.name, "kind": i.kind(), "status": i.status}))
                .collect();
            send(socket, &json!({"type": "snapshot", "instances": instances})).await
        }
        Err(error) => {
            tracing::warn!(%user, %error, "live status snapshot");
            // The socket closes either way; a failed send changes nothing.
            let _ = send(
                socket,
                &json!({"type": "error", "message": "instances are unavailable; reconnect later"}),
            )
            .await;
            Err(())
        }
    }
}

/// The `status` frame of `update`, built once per update by [`LiveUpdate::new`](crate::LiveUpdate::new)
/// and shared by every client it goes to.
pub(crate) fn status_frame(update: &StatusUpdate) -> Utf8Bytes {
    let frame = json!({
        "type": "status",
        "instance_id": update.instance_id,
        "status": update.status,
        "event": update.event,
        "at": update.at,
    });
    Utf8Bytes::from(frame.to_string())
}

async fn send(socket: &mut WebSocket, frame: &serde_json::Value) -> Result<(), ()> {
    socket.send(Message::Text(Utf8Bytes::from(frame.to_string()))).await.map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use iaas_core::{InstanceId, InstanceStatus};

    #[test]
    fn a_status_frame_keeps_its_wire_shape() {
        let update = StatusUpdate {
            instance_id: InstanceId::new_random(),
            owner: UserId::new_random(),
            status: InstanceStatus::Stopped,
            event: "docker.stopped".to_owned(),
            at: Utc.with_ymd_and_hms(2026, 11, 25, 17, 0, 0).unwrap(),
        };
        let frame: serde_json::Value = serde_json::from_str(&status_frame(&update)).unwrap();
        assert_eq!(
            frame,
            json!({
                "type": "status",
                "instance_id": update.instance_id.to_string(),
                "status": "stopped",
                "event": "docker.stopped",
                "at": "2026-11-25T17:00:00Z",
            }),
            "the owner is never sent"
        );
    }
}
