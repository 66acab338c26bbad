//! Waiting for an outcome without a bare `sleep`: poll a condition until it holds or a deadline
//! passes, and report the last observation when it never does.

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`eventually`] polls.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Polls `probe` until it returns `Ok(value)`, or fails after `deadline` with the last `Err`.
///
/// ```no_run
/// # async fn demo() -> Result<(), String> {
/// use std::time::Duration;
/// let answer = iaas_testkit::wait::eventually(Duration::from_secs(2), || async {
///     Err::<u32, _>("not yet")
/// })
/// .await?;
/// # Ok(()) }
/// ```
pub async fn eventually<T, E, F, Fut>(deadline: Duration, mut probe: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Debug,
{
    let started = Instant::now();
    loop {
        match probe().await {
            Ok(value) => return Ok(value),
            Err(err) if started.elapsed() >= deadline => {
                return Err(format!("still failing after {deadline:?}: {err:?}"));
            }
            Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn returns_as_soon_as_the_probe_succeeds() {
        let calls = AtomicU32::new(0);
        let value = eventually(Duration::from_secs(5), || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 { Err("not yet") } else { Ok(42) }
        })
        .await;
        assert_eq!(value, Ok(42));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn reports_the_last_error_after_the_deadline() {
        let err = eventually(Duration::from_millis(120), || async { Err::<(), _>("still down") })
            .await
            .unwrap_err();
        assert!(err.contains("still down"), "{err}");
    }
}
