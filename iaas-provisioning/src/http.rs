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
//! without one gets 401 with a JSON error. A user past [`LiveLimits::per_user`] sockets gets
//! 429 and the server past [`LiveLimits::total`] 503, both `too_many_connections` with
//! `Retry-After`, before the upgrade.
//!
//! The server closes a socket with code [`CLOSE_TOKEN_EXPIRED`] (4001) when the access token it
//! was opened with expires, [`CLOSE_SESSION_ENDED`] (4003) when its login ends (logout,
//! logout-all, password change, the session revoked): at once where the session store tells
//! endings as they happen ([`SessionLiveness::login_news`]), otherwise within
//! [`LiveLimits::session_check`] plus the time one pass over all open logins takes
//! (milliseconds for thousands), [`CLOSE_RESTARTING`] (1012) when the process begins to stop (see
//! [`LiveOptions::with_shutdown`]; reconnecting reaches another replica), and
//! [`CLOSE_POLICY`] (1008) when the client sends a message larger than
//! [`LiveLimits::max_message_bytes`]. A client reconnects with a fresh token.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use futures_util::FutureExt as _;
use iaas_core::http::HttpError;
use iaas_core::{InstanceRepository, Principal, SessionLiveness, UserId};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use crate::live::{LiveStatus, StatusUpdate};
use crate::live_guard::{Connections, LiveLimits, Refusal, Slot, Snapshots};
use crate::live_sessions::LoginWatch;

/// Close code: the access token the socket was opened with expired.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;
/// Close code: the login the socket belongs to ended (logout, logout-all, password change).
pub const CLOSE_SESSION_ENDED: u16 = 4003;
/// Close code: the client sent more than the server accepts (see [`LiveLimits`]).
pub const CLOSE_POLICY: u16 = 1008;
/// Close code when the server is going away for a restart (RFC 6455's 1012, "Service
/// Restart"): reconnect, the next connection reaches another replica.
pub const CLOSE_RESTARTING: u16 = 1012;

/// What each socket allocates to read into. The protocol's default (128 KiB) held 1.4 GiB at
/// 10,000 sockets (docs/benchmarks.md); clients send nothing but pings and small messages, and
/// the buffer grows for a larger one, up to [`LiveLimits::max_message_bytes`].
const READ_BUFFER_BYTES: usize = 4096;

/// What the live endpoint needs besides the fan-out and the store.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct LiveOptions {
    /// Where the logins of the open sockets are found ended: told by it as they end, or asked
    /// every [`LiveLimits::session_check`] where it cannot tell (once per login, however many
    /// sockets it has open); without it a socket ends only when its token expires.
    pub sessions: Option<Arc<dyn SessionLiveness>>,
    /// Caps and sizes.
    pub limits: LiveLimits,
    /// Cancelled when the process begins to stop: every socket is closed with
    /// [`CLOSE_RESTARTING`], so clients reconnect (to another replica) at once.
    pub shutdown: Option<CancellationToken>,
}

impl std::fmt::Debug for LiveOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveOptions")
            .field("sessions", &self.sessions.is_some())
            .field("limits", &self.limits)
            .field("shutdown", &self.shutdown.is_some())
            .finish()
    }
}

impl LiveOptions {
    /// Ends sockets whose login `sessions` says has ended.
    #[must_use]
    pub fn with_sessions(mut self, sessions: Arc<dyn SessionLiveness>) -> Self {
        self.sessions = Some(sessions);
        self
    }

    /// Other caps and sizes.
    #[must_use]
    pub fn with_limits(mut self, limits: LiveLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Closes every socket with [`CLOSE_RESTARTING`] once `shutdown` is cancelled.
    #[must_use]
    pub fn with_shutdown(mut self, shutdown: CancellationToken) -> Self {
        self.shutdown = Some(shutdown);
        self
    }
}

#[derive(Clone)]
struct LiveState {
    live: LiveStatus,
    options: LiveOptions,
    connections: Arc<Connections>,
    snapshots: Arc<Snapshots>,
    /// The open sockets' logins, checked by one task (with [`LiveOptions::sessions`]).
    logins: Option<Arc<LoginWatch>>,
}

/// The router serving `GET /v1/ws`, with the default [`LiveOptions`] (no session checks).
pub fn live_router(live: LiveStatus, repo: Arc<dyn InstanceRepository>) -> Router {
    live_router_with(live, repo, LiveOptions::default())
}

/// The router serving `GET /v1/ws` with `options`.
pub fn live_router_with(
    live: LiveStatus,
    repo: Arc<dyn InstanceRepository>,
    options: LiveOptions,
) -> Router {
    let fetch = Arc::new(move |user: UserId| snapshot_frame(repo.clone(), user).boxed());
    let logins = options
        .sessions
        .as_ref()
        .map(|sessions| Arc::new(LoginWatch::new(sessions.clone(), &options.limits)));
    let state = LiveState {
        live,
        options,
        connections: Arc::default(),
        snapshots: Arc::new(Snapshots::new(fetch)),
        logins,
    };
    Router::new().route("/v1/ws", get(upgrade)).with_state(state)
}

async fn upgrade(
    State(state): State<LiveState>,
    principal: Option<Extension<Principal>>,
    socket: WebSocketUpgrade,
) -> Response {
    let Some(Extension(principal)) = principal else {
        return HttpError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a valid access token is required",
        )
        .into_response();
    };
    // A token of a login that already ended opens nothing (it would be closed as soon as its
    // login is asked about anyway).
    if !session_is_live(&principal, &state).await {
        return HttpError::new(
            StatusCode::UNAUTHORIZED,
            "session_ended",
            "the login this token belongs to has ended; sign in again",
        )
        .into_response();
    }
    // A process that is stopping takes no new socket: the client retries, and the load
    // balancer, which saw the readiness check fail, sends it to another replica.
    if state.options.shutdown.as_ref().is_some_and(CancellationToken::is_cancelled) {
        metrics::counter!("iaas_live_sockets_refused_total").increment(1);
        return HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "this server is restarting; reconnect",
        )
        .with_retry_after(1)
        .into_response();
    }
    let limits = state.options.limits;
    let slot = match state.connections.open(principal.user_id, &limits) {
        Ok(slot) => slot,
        Err(refusal) => {
            let (status, message) = match refusal {
                Refusal::User(cap) => (
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("you have {cap} live connections open, the most allowed; close one"),
                ),
                Refusal::Total(cap) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "the server holds {cap} live connections, the most it takes; retry later"
                    ),
                ),
            };
            metrics::counter!("iaas_live_sockets_refused_total").increment(1);
            return HttpError::new(status, "too_many_connections", message)
                .with_retry_after(5)
                .into_response();
        }
    };
    socket
        .max_message_size(limits.max_message_bytes)
        .max_frame_size(limits.max_message_bytes)
        .read_buffer_size(READ_BUFFER_BYTES)
        .on_upgrade(move |socket| serve(socket, principal, state, slot))
}

/// Why the server ends a socket.
enum End {
    /// The client left, or the socket failed.
    Gone,
    /// The server closes with this code and reason.
    Close(u16, &'static str),
}

async fn serve(mut socket: WebSocket, principal: Principal, state: LiveState, _slot: Slot) {
    let user = principal.user_id;
    // Watch before the snapshot, so nothing that changes in between is missed.
    let mut updates = state.live.watch();
    let end = match send_snapshot(&mut socket, user, &state).await {
        Err(()) => End::Gone,
        Ok(()) => follow(&mut socket, &principal, &state, &mut updates).await,
    };
    if let End::Close(code, reason) = end {
        tracing::debug!(%user, code, reason, "closing a live status socket");
        let frame = CloseFrame { code, reason: Utf8Bytes::from_static(reason) };
        // The client may be gone already; nothing is left to do either way.
        let _ = socket.send(Message::Close(Some(frame))).await;
    }
}

async fn follow(
    socket: &mut WebSocket,
    principal: &Principal,
    state: &LiveState,
    updates: &mut tokio::sync::broadcast::Receiver<crate::live::LiveUpdate>,
) -> End {
    let user = principal.user_id;
    let expiry = principal.expires_at.map(|at| {
        let left = (at - chrono::Utc::now()).to_std().unwrap_or_default();
        tokio::time::Instant::now() + left
    });
    let expired = async {
        match expiry {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expired);
    let stopping = async {
        match &state.options.shutdown {
            Some(shutdown) => shutdown.cancelled().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stopping);
    let watched = match (&state.logins, principal.session) {
        (Some(logins), Some(session)) => Some(logins.watch(user, session)),
        _ => None,
    };
    let login_ended = async {
        match &watched {
            Some(watched) => watched.ended().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(login_ended);
    loop {
        tokio::select! {
            () = &mut expired => return End::Close(CLOSE_TOKEN_EXPIRED, "access token expired"),
            () = &mut stopping => return End::Close(CLOSE_RESTARTING, "server restarting; reconnect"),
            () = &mut login_ended => return End::Close(CLOSE_SESSION_ENDED, "session ended"),
            update = updates.recv() => {
                let frame = match update {
                    // Serialized once for every client (`LiveUpdate::new`): a clone shares it.
                    Ok(update) if update.is_for(user) => update.frame().clone(),
                    Ok(_) => continue,
                    Err(RecvError::Lagged(missed)) => {
                        tracing::debug!(%user, missed, "live status client lagged");
                        if send(socket, &json!({"type": "lagged", "missed": missed})).await.is_err()
                            || send_snapshot(socket, user, state).await.is_err()
                        {
                            return End::Gone;
                        }
                        continue;
                    }
                    Err(RecvError::Closed) => return End::Gone,
                };
                if socket.send(Message::Text(frame)).await.is_err() {
                    return End::Gone;
                }
            }
            incoming = socket.recv() => match incoming {
                None | Some(Ok(Message::Close(_))) => return End::Gone,
                // Too large a message (or a broken frame): the protocol layer refused it.
                Some(Err(_)) => return End::Close(CLOSE_POLICY, "message too large or malformed"),
                // Pings are answered by the WebSocket layer; clients have nothing else to say.
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Whether the socket's login is still live; a socket without a session, or a store that
/// does not answer, keeps going (the token's expiry still ends it).
async fn session_is_live(principal: &Principal, state: &LiveState) -> bool {
    let (Some(sessions), Some(session)) = (&state.options.sessions, principal.session) else {
        return true;
    };
    match sessions.is_live(principal.user_id, session).await {
        Ok(live) => live,
        Err(error) => {
            tracing::debug!(user = %principal.user_id, %error, "session check failed; the socket stays open");
            true
        }
    }
}

async fn send_snapshot(socket: &mut WebSocket, user: UserId, state: &LiveState) -> Result<(), ()> {
    match state.snapshots.get(user, state.live.sent()).await {
        Ok(frame) => socket.send(Message::Text(frame)).await.map_err(|_| ()),
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

/// The `snapshot` frame of `user`'s instances.
async fn snapshot_frame(
    repo: Arc<dyn InstanceRepository>,
    user: UserId,
) -> Result<Utf8Bytes, String> {
    let instances = repo.list_instances_by_owner(user).await.map_err(|error| error.to_string())?;
    let instances: Vec<_> = instances
        .iter()
        .map(|i| json!({"id": i.id, "name": i.name, "kind": i.kind(), "status": i.status}))
        .collect();
    Ok(Utf8Bytes::from(json!({"type": "snapshot", "instances": instances}).to_string()))
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
