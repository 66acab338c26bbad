//! Whether the logins behind the open live-status sockets are still live, found out once per
//! login by one task, whatever the number of sockets.
//!
//! A socket registers its login ([`LoginWatch::watch`]) and waits on [`Watched::ended`]. The
//! first registration starts the watching task; when the last socket is gone the task ends.
//!
//! - **Told.** When the session store tells logins' endings as they happen
//!   ([`SessionLiveness::login_news`]: the embedded store, and Redis for every process sharing
//!   it), the task wakes the sockets of each login it is told ended, at once. It asks the store
//!   about a login only when the login's first socket registers (an ending told between the
//!   socket's opening check and its registration would otherwise be missed), and about every
//!   login each [`LiveLimits::session_recheck`](crate::LiveLimits) as a net. So 10,000 sockets
//!   of 10,000 logins cost 10,000 checks a minute, not 5,000 a second.
//! - **Asked.** Otherwise, and while the store cannot tell (its subscription was lost: it said
//!   [`LoginNews::Deaf`]), the task asks about every login each
//!   [`LiveLimits::session_check`](crate::LiveLimits), a bounded number at a time, and once
//!   more when the store hears again (endings of the gap were not told). A socket then learns
//!   that its login ended within an interval plus one pass (10,000 logins at 32 checks in
//!   flight: about 313 store round trips in a row).
//!
//! Metrics: `iaas_live_session_checks_total` (logins asked about),
//! `iaas_live_logins_ended_total{found="told"|"asked"}`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{FutureExt as _, StreamExt as _};
use iaas_core::{LoginNews, LoginNewsFeed, SessionLiveness, UserId};
use tokio::sync::Notify;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use uuid::Uuid;

use crate::LiveLimits;

/// Checks of one pass in flight at once: a store round trip each, so a pass over 10,000 logins
/// on Redis takes a few hundred round trips' time, not 10,000.
const CHECKS_IN_FLIGHT: usize = 32;

/// The bounds of both intervals: a zero one would make the task spin, a huge one overflow.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MAX_INTERVAL: Duration = Duration::from_secs(7 * 24 * 3600);

type Login = (UserId, Uuid);

/// The logins of the open sockets and the task that watches them.
pub(crate) struct LoginWatch {
    sessions: Arc<dyn SessionLiveness>,
    /// Between passes while not told.
    every: Duration,
    /// Between passes while told.
    recheck: Duration,
    state: Mutex<WatchState>,
    /// Wakes the task for a new login or for the last socket gone.
    changed: Notify,
}

#[derive(Default)]
struct WatchState {
    logins: HashMap<Login, Watchers>,
    /// Logins registered since the task last looked.
    fresh: Vec<Login>,
    /// Whether the watching task runs.
    checking: bool,
}

impl WatchState {
    /// `login` with its token, while it is registered and not yet found ended.
    fn live(&self, login: &Login) -> Option<(Login, CancellationToken)> {
        self.logins
            .get(login)
            .filter(|watchers| !watchers.ended.is_cancelled())
            .map(|watchers| (*login, watchers.ended.clone()))
    }
}

struct Watchers {
    /// Cancelled when the login is found or told ended.
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
        f.debug_struct("LoginWatch")
            .field("every", &self.every)
            .field("recheck", &self.recheck)
            .finish_non_exhaustive()
    }
}

impl LoginWatch {
    /// Asks `sessions` each `limits.session_check`, or each `limits.session_recheck` while it
    /// tells endings.
    pub(crate) fn new(sessions: Arc<dyn SessionLiveness>, limits: &LiveLimits) -> Self {
        let every = limits.session_check.clamp(MIN_INTERVAL, MAX_INTERVAL);
        Self {
            sessions,
            every,
            recheck: limits.session_recheck.clamp(every, MAX_INTERVAL),
            state: Mutex::default(),
            changed: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, WatchState> {
        // Every change is a whole insert, count change or remove: a poisoned map is consistent.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a socket of `user`'s login `session`; starts the watching task if none runs.
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
        if watchers.sockets == 1 {
            state.fresh.push(login);
            self.changed.notify_one();
        }
        if !state.checking {
            state.checking = true;
            tokio::spawn(self.clone().watch_until_unwatched());
        }
        Watched { watch: self.clone(), login, ended }
    }

    /// Logins with at least one socket.
    #[cfg(test)]
    fn watched_logins(&self) -> usize {
        self.state().logins.len()
    }

    async fn watch_until_unwatched(self: Arc<Self>) {
        // Should a pass panic, the next registration starts a new task.
        let mut running = Running { watch: &self, armed: true };
        // Listening starts before any login is asked about: an ending after the answer is told.
        let mut feed = self.sessions.login_news();
        let mut told = feed.as_ref().is_some_and(LoginNewsFeed::hearing);
        // The first pass asks about every login: the one that started the task, and any a task
        // that panicked left behind.
        let mut pass_at = Some(Instant::now());
        let mut last_pass = Instant::now();
        // Logins to ask about soon, apart from passes: new ones, and a user's after a logout-all.
        let mut wanted: HashSet<Login> = HashSet::new();
        // Logins whose check failed while told, asked again an interval later.
        let mut retry: HashSet<Login> = HashSet::new();
        let mut retry_at: Option<Instant> = None;
        let mut asking: Option<BoxFuture<'_, Vec<Login>>> = None;
        loop {
            let between = if told { self.recheck } else { self.every };
            {
                let mut state = self.state();
                if state.logins.is_empty() && asking.is_none() {
                    state.checking = false;
                    state.fresh.clear();
                    running.armed = false;
                    return;
                }
                let fresh = std::mem::take(&mut state.fresh);
                // Unless told, the next pass (an interval away at most) asks about new logins.
                if told {
                    wanted.extend(fresh);
                }
                let now = Instant::now();
                if asking.is_none() {
                    if retry_at.is_some_and(|at| at <= now) {
                        retry_at = None;
                        wanted.extend(retry.drain());
                    }
                    // Due at its planned time or an interval after the last pass, whichever
                    // comes first: asks about new logins in between never hold it off.
                    let due = pass_at.is_some_and(|at| at <= now) || last_pass + between <= now;
                    let logins: Vec<(Login, CancellationToken)> = if due {
                        pass_at = None;
                        last_pass = now;
                        wanted.clear();
                        retry.clear();
                        retry_at = None;
                        state.logins.keys().filter_map(|login| state.live(login)).collect()
                    } else {
                        wanted.drain().filter_map(|login| state.live(&login)).collect()
                    };
                    if !logins.is_empty() {
                        asking = Some(self.ask(logins).boxed());
                    }
                }
            }
            let next_pass = pass_at.map_or(last_pass + between, |at| at.min(last_pass + between));
            let next_wake = retry_at.map_or(next_pass, |at| at.min(next_pass));
            tokio::select! {
                failed = async {
                    match asking.as_mut() {
                        Some(asked) => asked.await,
                        None => std::future::pending().await,
                    }
                } => {
                    asking = None;
                    // While not told, the next pass (an interval away) asks them again.
                    if told && !failed.is_empty() {
                        retry.extend(failed);
                        retry_at.get_or_insert(Instant::now() + self.every);
                    }
                }
                // What falls due while an ask runs starts once that one is done.
                () = tokio::time::sleep_until(next_wake), if asking.is_none() => {}
                () = self.changed.notified() => {}
                news = next_news(&mut feed) => match news {
                    Ok(LoginNews::Ended { user, session }) => self.end((user, session)),
                    // A login made after the logout-all may already be here: each is asked.
                    Ok(LoginNews::AllEnded { user }) => wanted.extend(self.logins_of(user)),
                    Ok(LoginNews::Deaf) => told = false,
                    // Endings of the gap, or those dropped for lagging, were not told: a pass,
                    // though not sooner than an interval after the last (a flapping connection
                    // does not make passes back to back).
                    Ok(LoginNews::Resumed) => {
                        told = true;
                        pass_soon(&mut pass_at, last_pass + self.every);
                    }
                    Err(RecvError::Lagged(_)) => {
                        // A `Deaf` or `Resumed` may be among what was dropped.
                        told = feed.as_ref().is_some_and(LoginNewsFeed::hearing);
                        pass_soon(&mut pass_at, last_pass + self.every);
                    }
                    Err(RecvError::Closed) => {
                        feed = None;
                        told = false;
                    }
                },
            }
        }
    }

    /// Wakes the sockets of `login`, told ended.
    fn end(&self, login: Login) {
        let state = self.state();
        if let Some(watchers) = state.logins.get(&login)
            && !watchers.ended.is_cancelled()
        {
            watchers.ended.cancel();
            metrics::counter!("iaas_live_logins_ended_total", "found" => "told").increment(1);
        }
    }

    /// The registered logins of `user`.
    fn logins_of(&self, user: UserId) -> Vec<Login> {
        self.state().logins.keys().filter(|login| login.0 == user).copied().collect()
    }

    /// Asks the store about `logins`, a bounded number at a time.
    /// The logins whose check failed.
    async fn ask(&self, logins: Vec<(Login, CancellationToken)>) -> Vec<Login> {
        metrics::counter!("iaas_live_session_checks_total").increment(logins.len() as u64);
        let failed = Mutex::new(Vec::new());
        futures_util::stream::iter(logins)
            .for_each_concurrent(CHECKS_IN_FLIGHT, |((user, session), ended)| {
                let failed = &failed;
                async move {
                    match self.sessions.is_live(user, session).await {
                        Ok(true) => {}
                        Ok(false) => {
                            if !ended.is_cancelled() {
                                ended.cancel();
                                metrics::counter!("iaas_live_logins_ended_total", "found" => "asked")
                                    .increment(1);
                            }
                        }
                        // A store that does not answer ends nothing: the token's expiry still
                        // does, and the login is asked about again.
                        Err(error) => {
                            failed
                                .lock()
                                .unwrap_or_else(|poisoned| poisoned.into_inner())
                                .push((user, session));
                            tracing::debug!(
                                %user, %session, %error,
                                "session check failed; the login's sockets stay open"
                            );
                        }
                    }
                }
            })
            .await;
        failed.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Brings the next pass forward to `at`, or to now if that has passed.
fn pass_soon(pass_at: &mut Option<Instant>, at: Instant) {
    let at = at.max(Instant::now());
    *pass_at = Some(pass_at.map_or(at, |planned| planned.min(at)));
}

/// The next news of `feed`; never, without one.
async fn next_news(feed: &mut Option<LoginNewsFeed>) -> Result<LoginNews, RecvError> {
    match feed {
        Some(feed) => feed.news.recv().await,
        None => std::future::pending().await,
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
    /// Completes once the login was found or told ended.
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
                if state.logins.is_empty() {
                    // The task ends now rather than at its next pass.
                    self.watch.changed.notify_one();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
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
    const RECHECK: Duration = Duration::from_secs(60);

    fn limits() -> LiveLimits {
        LiveLimits { session_check: EVERY, session_recheck: RECHECK, ..LiveLimits::default() }
    }

    /// [`Sessions`] that also tell their endings, when told to.
    #[derive(Default)]
    struct Told {
        sessions: Sessions,
        news: iaas_core::LoginNewsHub,
        /// Logins whose check fails.
        failing: Mutex<HashSet<Uuid>>,
        /// Whether every check takes 10 s.
        slow: std::sync::atomic::AtomicBool,
        /// Checks per login.
        per_login: Mutex<HashMap<Uuid, u64>>,
    }

    impl Told {
        fn end(&self, user: UserId, session: Uuid) {
            self.sessions.ended.lock().unwrap().insert(session);
            self.news.tell(LoginNews::Ended { user, session });
        }

        fn asked(&self) -> u64 {
            self.sessions.asked.load(Ordering::SeqCst)
        }

        fn asked_about(&self, session: Uuid) -> u64 {
            self.per_login.lock().unwrap().get(&session).copied().unwrap_or_default()
        }
    }

    #[async_trait::async_trait]
    impl SessionLiveness for Told {
        async fn is_live(&self, user: UserId, session: Uuid) -> iaas_core::Result<bool> {
            *self.per_login.lock().unwrap().entry(session).or_default() += 1;
            if self.slow.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            if self.failing.lock().unwrap().contains(&session) {
                self.sessions.asked.fetch_add(1, Ordering::SeqCst);
                return Err(iaas_core::Error::unavailable("redis", "checking", "refused"));
            }
            self.sessions.is_live(user, session).await
        }

        fn login_news(&self) -> Option<LoginNewsFeed> {
            Some(self.news.listen())
        }
    }

    /// A watch over a [`Told`] store with the test limits.
    fn told_watch() -> (Arc<Told>, Arc<LoginWatch>) {
        let told = Arc::new(Told::default());
        let watch = Arc::new(LoginWatch::new(told.clone(), &limits()));
        (told, watch)
    }

    /// Lets the watching task run what is due without moving the paused clock.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn told_endings_end_sockets_at_once_and_logins_are_asked_about_once_then_each_recheck() {
        let (told, watch) = told_watch();
        let (ada, bob) = (UserId::new_random(), UserId::new_random());
        let ada_logins: Vec<Uuid> = (0..100).map(|_| Uuid::new_v4()).collect();
        let ada_sockets: Vec<_> =
            ada_logins.iter().flat_map(|l| [watch.watch(ada, *l), watch.watch(ada, *l)]).collect();
        let bob_login = Uuid::new_v4();
        let bob_socket = watch.watch(bob, bob_login);
        settle().await;
        assert_eq!(told.asked(), 101, "each new login asked about once, as it registers");

        // A minute less a tick: no pass while told.
        tokio::time::sleep(RECHECK - Duration::from_millis(1)).await;
        assert_eq!(told.asked(), 101);

        told.end(ada, ada_logins[0]);
        settle().await;
        assert!(ada_sockets[0].ended.is_cancelled() && ada_sockets[1].ended.is_cancelled());
        assert!(ada_sockets[2..].iter().all(|socket| !socket.ended.is_cancelled()));
        assert!(!bob_socket.ended.is_cancelled());

        // The net: one pass each recheck.
        tokio::time::sleep(Duration::from_millis(2)).await;
        settle().await;
        assert_eq!(told.asked(), 101 + 100, "the logins not ended, asked once");

        // A logout-all: each of the user's logins is asked about (one made after it stays).
        let asked = told.asked();
        told.sessions.ended.lock().unwrap().extend(ada_logins.iter().skip(1).copied());
        told.news.tell(LoginNews::AllEnded { user: ada });
        settle().await;
        assert_eq!(told.asked(), asked + 99, "ada's logins not yet ended");
        assert!(ada_sockets.iter().all(|socket| socket.ended.is_cancelled()));
        assert!(!bob_socket.ended.is_cancelled(), "another user's login stays");
    }

    #[tokio::test(start_paused = true)]
    async fn a_login_ended_before_its_socket_registered_is_found_when_it_registers() {
        let (told, watch) = told_watch();
        let ada = UserId::new_random();
        let _listening = watch.watch(ada, Uuid::new_v4());
        settle().await;
        // The socket passed its opening check; the ending is told before it registers.
        let laptop = Uuid::new_v4();
        told.end(ada, laptop);
        settle().await;
        let late = watch.watch(ada, laptop);
        tokio::time::timeout(Duration::from_millis(1), late.ended())
            .await
            .expect("asked about as it registered");
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_that_stops_hearing_is_asked_each_interval_and_once_more_when_it_hears_again() {
        let (told, watch) = told_watch();
        let ada = UserId::new_random();
        let laptop = Uuid::new_v4();
        let socket = watch.watch(ada, laptop);
        settle().await;
        assert_eq!(told.asked(), 1);

        told.news.tell(LoginNews::Deaf);
        tokio::time::sleep(EVERY * 3 + Duration::from_millis(1)).await;
        assert_eq!(told.asked(), 4, "asked each interval while the store cannot tell");

        // Ended while nobody could tell: found by the pass the store's return brings.
        told.sessions.ended.lock().unwrap().insert(laptop);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(!socket.ended.is_cancelled());
        told.news.tell(LoginNews::Resumed);
        tokio::time::timeout(EVERY, socket.ended()).await.expect(
            "the whole set asked about once the store hears again, an interval after the last pass",
        );
        // Told again: no pass for the next recheck.
        let asked = told.asked();
        let _other = watch.watch(ada, Uuid::new_v4());
        settle().await;
        tokio::time::sleep(RECHECK / 2).await;
        assert_eq!(told.asked(), asked + 1, "only the new login, asked as it registered");
    }

    #[tokio::test(start_paused = true)]
    async fn a_listener_that_lagged_asks_about_every_login_and_learns_whether_the_store_hears() {
        let (told, watch) = told_watch();
        let ada = UserId::new_random();
        let laptop = Uuid::new_v4();
        let socket = watch.watch(ada, laptop);
        settle().await;
        // More news than a listener keeps, with the store's `Deaf` among what is dropped; the
        // laptop's login ended without being told.
        told.sessions.ended.lock().unwrap().insert(laptop);
        told.news.tell(LoginNews::Deaf);
        for _ in 0..2000 {
            told.news.tell(LoginNews::Ended { user: ada, session: Uuid::new_v4() });
        }
        tokio::time::timeout(EVERY + Duration::from_millis(1), socket.ended())
            .await
            .expect("a pass after the lag finds the login ended");
        // Deaf: asked each interval.
        let phone = Uuid::new_v4();
        let _phone_socket = watch.watch(ada, phone);
        tokio::time::sleep(EVERY * 3 + Duration::from_millis(1)).await;
        assert!(told.asked_about(phone) >= 3, "asked each interval while the store is deaf");
    }

    #[tokio::test(start_paused = true)]
    async fn new_logins_arriving_during_slow_asks_do_not_hold_off_the_recheck() {
        let told = Arc::new(Told::default());
        told.slow.store(true, Ordering::SeqCst);
        let watch = Arc::new(LoginWatch::new(told.clone(), &limits()));
        let ada = UserId::new_random();
        let first = Uuid::new_v4();
        let _first_socket = watch.watch(ada, first);
        let mut sockets = Vec::new();
        // A new login every 5 s, each asked about for 10 s.
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            sockets.push(watch.watch(ada, Uuid::new_v4()));
        }
        assert!(told.asked_about(first) >= 2, "the first login asked again by the recheck");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_check_while_told_asks_that_login_again_an_interval_later() {
        let (told, watch) = told_watch();
        let ada = UserId::new_random();
        let (laptop, phone) = (Uuid::new_v4(), Uuid::new_v4());
        told.failing.lock().unwrap().insert(laptop);
        let _laptop_socket = watch.watch(ada, laptop);
        let _phone_socket = watch.watch(ada, phone);
        settle().await;
        tokio::time::sleep(EVERY * 3 + Duration::from_millis(1)).await;
        assert_eq!(told.asked_about(laptop), 4, "asked as it registered, then each interval");
        assert_eq!(told.asked_about(phone), 1, "the login that answered is not asked again");
    }

    #[tokio::test(start_paused = true)]
    async fn sockets_of_one_login_share_one_check_per_interval_and_end_together() {
        let sessions = Arc::new(Sessions::default());
        let watch = Arc::new(LoginWatch::new(sessions.clone(), &limits()));
        let ada = UserId::new_random();
        let (laptop, phone) = (Uuid::new_v4(), Uuid::new_v4());
        let laptop_sockets: Vec<_> = (0..1000).map(|_| watch.watch(ada, laptop)).collect();
        let phone_socket = watch.watch(ada, phone);

        tokio::time::sleep(EVERY * 3 + Duration::from_millis(1)).await;
        assert_eq!(
            sessions.asked.load(Ordering::SeqCst),
            8,
            "two logins, a pass as the task starts and one each interval"
        );

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
        assert_eq!(sessions.asked.load(Ordering::SeqCst), asked + 2, "as it starts, then a pass");
        assert!(!again.ended.is_cancelled());
    }

    /// A store that takes 10 s to answer, then says live.
    struct Slow;

    #[async_trait::async_trait]
    impl SessionLiveness for Slow {
        async fn is_live(&self, _user: UserId, _session: Uuid) -> iaas_core::Result<bool> {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok(true)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_ending_told_while_a_slow_pass_runs_ends_its_sockets_at_once() {
        struct SlowTold(iaas_core::LoginNewsHub);
        #[async_trait::async_trait]
        impl SessionLiveness for SlowTold {
            async fn is_live(&self, user: UserId, session: Uuid) -> iaas_core::Result<bool> {
                Slow.is_live(user, session).await
            }
            fn login_news(&self) -> Option<LoginNewsFeed> {
                Some(self.0.listen())
            }
        }
        let news = iaas_core::LoginNewsHub::default();
        let watch = Arc::new(LoginWatch::new(Arc::new(SlowTold(news.clone())), &limits()));
        let ada = UserId::new_random();
        let (laptop, phone) = (Uuid::new_v4(), Uuid::new_v4());
        let laptop_socket = watch.watch(ada, laptop);
        let phone_socket = watch.watch(ada, phone);
        settle().await;
        // The first pass waits on the store; the news does not wait for it.
        news.tell(LoginNews::Ended { user: ada, session: laptop });
        tokio::time::timeout(Duration::from_millis(1), laptop_socket.ended())
            .await
            .expect("told while the pass waits");
        assert!(!phone_socket.ended.is_cancelled());
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
        let watch = Arc::new(LoginWatch::new(failing.clone(), &limits()));
        let socket = watch.watch(UserId::new_random(), Uuid::new_v4());
        tokio::time::sleep(EVERY * 5 + Duration::from_millis(1)).await;
        assert_eq!(
            failing.asked.load(Ordering::SeqCst),
            6,
            "asked as it starts, then every interval"
        );
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
        let watch = Arc::new(LoginWatch::new(Arc::new(PanicsOnce::default()), &limits()));
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
        let watch = Arc::new(LoginWatch::new(sessions.clone(), &limits()));
        let (ada, laptop) = (UserId::new_random(), Uuid::new_v4());
        let first = watch.watch(ada, laptop);
        sessions.ended.lock().unwrap().insert(laptop);
        first.ended().await;
        let late = watch.watch(ada, laptop);
        assert!(late.ended.is_cancelled(), "it joins the login's ended state");
    }
}
