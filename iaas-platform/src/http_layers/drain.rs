//! The rest of a request body nobody read: read and thrown away in the background, within
//! bounds, so the client still uploading it gets to read the answer.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, BodyDataStream, Bytes};
use futures_util::{Stream, StreamExt};

use super::DRAIN_MAX_BYTES;

/// A request body that records when it was read to its end and, dropped before that (the
/// answer was given without it, or with only part of it), has its rest discarded by
/// [`discard_rest`].
pub(super) struct Tracked {
    /// `None` once the end was read.
    rest: Option<BodyDataStream>,
    received: Arc<AtomicBool>,
    drain_for: Duration,
}

impl Tracked {
    /// `body`, setting `received` once its end was read; a rest left unread is discarded for at
    /// most `drain_for`.
    pub(super) fn new(body: Body, received: Arc<AtomicBool>, drain_for: Duration) -> Self {
        Self { rest: Some(body.into_data_stream()), received, drain_for }
    }
}

impl Stream for Tracked {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(rest) = self.rest.as_mut() else { return Poll::Ready(None) };
        let next = rest.poll_next_unpin(cx);
        if let Poll::Ready(None) = next {
            self.rest = None;
            self.received.store(true, Ordering::Relaxed);
        }
        next
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(rest) = self.rest.take() {
            discard_rest(rest, self.drain_for);
        }
    }
}

/// Reads `rest` in the background and throws it away, up to its end, [`DRAIN_MAX_BYTES`] or
/// `limit`, whichever comes first; then drops it.
///
/// The connection stays open while this reads, so the answer (already on its way) reaches a
/// client that writes its whole body before reading; one that sends more, or for longer, has
/// the connection closed under it, which is what a bound is for.
pub(super) fn discard_rest(mut rest: BodyDataStream, limit: Duration) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    runtime.spawn(async move {
        let mut read: u64 = 0;
        let finished = tokio::time::timeout(limit, async {
            while let Some(chunk) = rest.next().await {
                match chunk {
                    Ok(chunk) => read = read.saturating_add(chunk.len() as u64),
                    // The client went away: nothing left to wait for.
                    Err(_) => return true,
                }
                if read > DRAIN_MAX_BYTES {
                    return false;
                }
            }
            true
        })
        .await
        .unwrap_or(false);
        if !finished {
            tracing::debug!(
                read,
                "closing a connection whose unread request body went on too long"
            );
        }
    });
}
