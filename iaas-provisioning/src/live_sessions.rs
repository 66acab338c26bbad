//! Whether the logins behind the open live-status sockets are still live, asked once per login
//! per [`LiveLimits::session_check`](crate::LiveLimits) by one task, whatever the number of
//! sockets.
//!
//! A socket registers its login ([`LoginWatch::watch`]) and waits on [`Watched::ended`]. The
//! first registration starts the checking task; it asks the session store about every
//! registered login each interval, a bounded number at a time, and wakes the sockets of the
//! logins that ended. When the last socket is gone the task ends with its next pass. So 10,000
//! sockets of one login cost one check per interval, and 10,000 logins one pass of 10,000
//! checks per interval from one task: no timer per socket. A socket learns that its login
//! ended within an interval plus the time of one pass (10,000 logins at 32 checks in flight:
//! about 313 store round trips in a row).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt as _;
use iaas_core::{SessionLiveness, UserId};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use uuid::Uuid;

/// Checks of one pass in flight at once: a store round trip each, so a pass over 10,000 logins
/// on Redis takes a few hundred round trips' time, not 10,000.
const CHECKS_IN_FLIGHT: usize = 32;

type Login = (UserId, Uuid);

/// The logins of the open sockets and the task that checks them.
pub(crate) struct LoginWatch {
    sessions: Arc<dyn SessionLiveness>,
    every: Duration,
    state: Mutex<WatchState>,
}

#[derive(Default)]
struct WatchState {
    logins: HashMap<Login, Watchers>,
    /// Whether the checking task runs.
    checking: bool,
}

struct Watchers {
    /// Cancelled when a check finds the login ended.
    ended: CancellationToken,
    sockets: usize,
}

/// One socket's registration; dropping it unregisters the socket.
pub(crate) struct Watched {
    watch: Arc<LoginWatch>,
    login: Login,
    ended: CancellationToken,
}

impl std::fmt::Debug for LoginWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginWatch").field("every", &self.every).finish_non_exhaustive()
    }
}

impl LoginWatch {
    /// Checks with `sessions` every `every`.
    pub(crate) fn new(sessions: Arc<dyn SessionLiveness>, every: Duration) -> Self {
        Self { sessions, every, state: Mutex::default() }
    }

    fn state(&self) -> MutexGuard<'_, WatchState> {
        // Every change is a whole insert, count change or remove: a poisoned map is consistent.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a socket of `user`'s login `session`; starts the checking task if none runs.
    /// Must be called within a Tokio runtime.
    pub(crate) fn watch(self: &Arc<Self>, user: UserId, session: Uuid) -> Watched {
        let login = (user, session);
        let mut state = self.state();
        let watchers = state
            .logins
            .entry(login)
            .or_insert_with(|| Watchers { ended: CancellationToken::new(), sockets: 0 });
        watchers.sockets += 1;
        let ended = watchers.ended.clone();
        if !state.checking {
            state.checking = true;
            tokio::spawn(self.clone().check_until_unwatched());
        }
        Watched { watch: self.clone(), login, ended }
    }

    /// Logins with at least one socket.
    #[cfg(test)]
    fn watched_logins(&self) -> usize {
        self.state().logins.len()
    }

    async fn check_until_unwatched(self: Arc<Self>) {
        // Should a pass panic, the next registration starts a new task.
        let mut running = Running { watch: &self, armed: true };
        // Passes start an interval apart (a long pass delays the next, never doubles it up).
        let mut passes = tokio::time::interval(self.every);
        passes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        passes.reset();
        loop {
            passes.tick().await;
            let logins: Vec<(Login, CancellationToken)> = {
                let mut state = self.state();
                if state.logins.is_empty() {
                    state.checking = false;
                    running.armed = false;
                    return;
                }
                state
                    .logins
                    .iter()
                    .filter(|(_, watchers)| !watchers.ended.is_cancelled())
                    .map(|(login, watchers)| (*login, watchers.ended.clone()))
                    .collect()
            };
            metrics::counter!("iaas_live_session_checks_total").increment(logins.len() as u64);
            futures_util::stream::iter(logins)
                .for_each_concurrent(CHECKS_IN_FLIGHT, |((user, session), ended)| {
                    let sessions = &self.sessions;
                    async move {
                        match sessions.is_live(user, session).await {
                            Ok(true) => {}
                            Ok(false) => ended.cancel(),
                            // A store that does not answer ends nothing: the token's expiry
                            // still does, and the next pass asks again.
                            Err(error) => tracing::debug!(
                                %user, %session, %error,
                                "session check failed; the login's sockets stay open"
                            ),
                        }
                    }
                })
                .await;
        }
    }
}

/// Marks the checking task stopped if it ends other than by finding no login (a panic).
struct Running<'a> {
    watch: &'a LoginWatch,
    armed: bool,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.watch.state().checking = false;
        }
    }
}

impl Watched {
    /// Completes once a check found the login ended.
    pub(crate) fn ended(&self) -> WaitForCancellationFuture<'_> {
        self.ended.cancelled()
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let mut state = self.watch.state();
        if let Some(watchers) = state.logins.get_mut(&self.login) {
            watchers.sockets -= 1;
            if watchers.sockets == 0 {
                state.logins.remove(&self.login);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// Sessions that are live unless ended, counting the questions.
    #[derive(Default)]
    struct Sessions {
        ended: Mutex<HashSet<Uuid>>,
        asked: AtomicU64,
    }

    #[async_trait::async_trait]
    impl SessionLiveness for Sessions {
        async fn is_live(&self, _user: UserId, session: Uuid) -> iaas_core::Result<bool> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            Ok(!self.ended.lock().unwrap().contains(&session))
        }
    }

    const EVERY: Duration = Duration::from_secs(2);

    #[tokio::test(start_paused = true)]
    async fn sockets_of_one_login_share_one_check_per_interval_and_end_together() {
        let sessions = Arc::new(Sessions::default());
        let watch = Arc::new(LoginWatch::new(sessions.clone(), EVERY));
        let ada = UserId::new_random();
        let (laptop, phone) = (Uuid::new_v4(), Uuid::new_v4());
        let laptop_sockets: Vec<_> = (0..1000).map(|_| watch.watch(ada, laptop)).collect();
        let phone_socket = watch.watch(ada, phone);

        tokio::time::sleep(EVERY * 3 + Duration::from_millis(1)).await;
        assert_eq!(sessions.asked.load(Ordering::SeqCst), 6, "two logins, three passes");

        sessions.ended.lock().unwrap().insert(laptop);
        let ending = async {
            for socket in &laptop_sockets {
                socket.ended().await;
            }
        };
        tokio::time::timeout(EVERY + Duration::from_millis(1), ending)
            .await
            .expect("every socket of the ended login is told within one interval");
        assert!(!phone_socket.ended.is_cancelled(), "the other login's socket stays");

        drop(laptop_sockets);
        assert_eq!(watch.watched_logins(), 1);
        drop(phone_socket);
        assert_eq!(watch.watched_logins(), 0);
        // The task ends with its next pass and asks nothing more; a new socket starts it again.
        tokio::time::sleep(EVERY * 2).await;
        let asked = sessions.asked.load(Ordering::SeqCst);
        assert!(!watch.state().checking);
        let again = watch.watch(ada, phone);
        tokio::time::sleep(EVERY + Duration::from_millis(1)).await;
        assert_eq!(sessions.asked.load(Ordering::SeqCst), asked + 1);
        assert!(!again.ended.is_cancelled());
    }

    /// A store that fails, counting the questions.
    #[derive(Default)]
    struct Failing {
        asked: AtomicU64,
    }

    #[async_trait::async_trait]
    impl SessionLiveness for Failing {
        async fn is_live(&self, _user: UserId, _session: Uuid) -> iaas_core::Result<bool> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            Err(iaas_core::Error::unavailable("redis", "checking a session", "connection refused"))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_that_does_not_answer_ends_no_socket() {
        let failing = Arc::new(Failing::default());
        let watch = Arc::new(LoginWatch::new(failing.clone(), EVERY));
        let socket = watch.watch(UserId::new_random(), Uuid::new_v4());
        tokio::time::sleep(EVERY * 5 + Duration::from_millis(1)).await;
        assert_eq!(failing.asked.load(Ordering::SeqCst), 5, "asked every interval");
        assert!(!socket.ended.is_cancelled());
    }

    /// A store whose first answer panics.
    #[derive(Default)]
    struct PanicsOnce {
        asked: AtomicU64,
    }

    #[async_trait::async_trait]
    impl SessionLiveness for PanicsOnce {
        async fn is_live(&self, _user: UserId, _session: Uuid) -> iaas_core::Result<bool> {
            let asked = self.asked.fetch_add(1, Ordering::SeqCst);
            assert!(asked > 0, "the first check panics");
            Ok(false)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_that_panics_leaves_the_next_socket_checked() {
        let watch = Arc::new(LoginWatch::new(Arc::new(PanicsOnce::default()), EVERY));
        let ada = UserId::new_random();
        let first = watch.watch(ada, Uuid::new_v4());
        tokio::time::sleep(EVERY + Duration::from_millis(1)).await;
        assert!(!watch.state().checking, "the task that panicked is marked stopped");
        let second = watch.watch(ada, Uuid::new_v4());
        tokio::time::timeout(EVERY + Duration::from_millis(1), second.ended())
            .await
            .expect("a new task checks the logins again");
        assert!(first.ended.is_cancelled(), "the first login too, in the new task's pass");
    }

    #[tokio::test(start_paused = true)]
    async fn a_socket_of_a_login_found_ended_is_told_at_once() {
        let sessions = Arc::new(Sessions::default());
        let watch = Arc::new(LoginWatch::new(sessions.clone(), EVERY));
        let (ada, laptop) = (UserId::new_random(), Uuid::new_v4());
        let first = watch.watch(ada, laptop);
        sessions.ended.lock().unwrap().insert(laptop);
        first.ended().await;
        let late = watch.watch(ada, laptop);
        assert!(late.ended.is_cancelled(), "it joins the login's ended state");
    }
}
