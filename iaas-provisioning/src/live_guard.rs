//! What keeps live-status sockets within bounds: connection caps per user and in all, and one
//! snapshot query shared by every client of a user that needs one at the same moment.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use iaas_core::UserId;

/// Limits of the live-status endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LiveLimits {
    /// Sockets one user may hold open (default 100); the next is refused with 429.
    pub per_user: usize,
    /// Sockets of all users together (default 10,000); the next is refused with 503.
    pub total: usize,
    /// Largest message a client may send, in bytes (default 4 KiB: clients have nothing to
    /// say beyond a ping).
    pub max_message_bytes: usize,
    /// How often the open sockets' logins are checked for being still live (default 2 s):
    /// one check per login, however many sockets it holds open. With a session store that
    /// tells logins' endings as they happen (the embedded one, Redis), this is the interval
    /// only while the store cannot tell (its subscription is lost).
    pub session_check: Duration,
    /// How often the logins are checked anyway while the session store tells their endings
    /// (default 60 s): a net for news lost on a connection that died without a word.
    pub session_recheck: Duration,
}

impl Default for LiveLimits {
    fn default() -> Self {
        Self {
            per_user: 100,
            total: 10_000,
            max_message_bytes: 4096,
            session_check: Duration::from_secs(2),
            session_recheck: Duration::from_secs(60),
        }
    }
}

/// Why a socket was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The user holds `per_user` sockets.
    User(usize),
    /// All users together hold `total`.
    Total(usize),
}

/// Open sockets, per user and in all.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    total: AtomicUsize,
    per_user: Mutex<HashMap<UserId, usize>>,
}

/// One open socket's place; giving it back happens when it is dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    connections: Arc<Connections>,
    user: UserId,
}

impl Connections {
    fn users(&self) -> MutexGuard<'_, HashMap<UserId, usize>> {
        // Every change is one whole insert or remove: a poisoned map is still consistent.
        self.per_user.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a place for one more socket of `user`, or says which limit refuses it.
    pub(crate) fn open(
        self: &Arc<Self>,
        user: UserId,
        limits: &LiveLimits,
    ) -> Result<Slot, Refusal> {
        let mut users = self.users();
        let held = users.get(&user).copied().unwrap_or(0);
        if held >= limits.per_user {
            return Err(Refusal::User(limits.per_user));
        }
        // Under the map's lock, so two opens cannot both take the last place.
        if self.total.load(Ordering::Acquire) >= limits.total {
            return Err(Refusal::Total(limits.total));
        }
        self.total.fetch_add(1, Ordering::AcqRel);
        users.insert(user, held + 1);
        drop(users);
        metrics::gauge!("iaas_live_sockets").increment(1.0);
        Ok(Slot { connections: self.clone(), user })
    }

    /// Sockets open now (all users).
    #[cfg(test)]
    fn total(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut users = self.connections.users();
        match users.get(&self.user).copied() {
            Some(held) if held > 1 => {
                users.insert(self.user, held - 1);
            }
            _ => {
                users.remove(&self.user);
            }
        }
        self.connections.total.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("iaas_live_sockets").decrement(1.0);
    }
}

/// A user's snapshot frame, or why it could not be read.
pub(crate) type SnapshotResult = Result<Utf8Bytes, String>;

/// Reads one user's snapshot frame.
pub(crate) type FetchSnapshot =
    Arc<dyn Fn(UserId) -> BoxFuture<'static, SnapshotResult> + Send + Sync>;

type InFlight = Shared<BoxFuture<'static, SnapshotResult>>;

/// Snapshot reads shared between the sockets of one user. A socket joins a read already under
/// way only if no status update was sent since that read began (`sent`, the fan-out's count of
/// updates): every update the socket will not see as a frame was sent before it subscribed or
/// lagged, so such a read started after it and includes it. N sockets of one user that lag
/// on the same burst cost one query.
pub(crate) struct Snapshots {
    fetch: FetchSnapshot,
    in_flight: Mutex<HashMap<UserId, (u64, InFlight)>>,
}

impl std::fmt::Debug for Snapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshots").finish_non_exhaustive()
    }
}

impl Snapshots {
    pub(crate) fn new(fetch: FetchSnapshot) -> Self {
        Self { fetch, in_flight: Mutex::default() }
    }

    fn reads(&self) -> MutexGuard<'_, HashMap<UserId, (u64, InFlight)>> {
        self.in_flight.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `user`'s snapshot frame, read after the `sent`-th update went out.
    pub(crate) async fn get(&self, user: UserId, sent: u64) -> SnapshotResult {
        let read = {
            let mut reads = self.reads();
            match reads.get(&user) {
                Some((started_at, read)) if *started_at == sent => read.clone(),
                _ => {
                    let read = (self.fetch)(user).shared();
                    reads.insert(user, (sent, read.clone()));
                    read
                }
            }
        };
        let result = read.clone().await;
        // Finished: the next socket that needs one reads afresh.
        let mut reads = self.reads();
        if reads.get(&user).is_some_and(|(_, current)| current.ptr_eq(&read)) {
            reads.remove(&user);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;

    #[test]
    fn caps_hold_per_user_and_in_all_and_places_come_back() {
        let limits = LiveLimits { per_user: 2, total: 3, ..LiveLimits::default() };
        let connections = Arc::new(Connections::default());
        let (ada, bob) = (UserId::new_random(), UserId::new_random());
        let a1 = connections.open(ada, &limits).unwrap();
        let _a2 = connections.open(ada, &limits).unwrap();
        assert_eq!(connections.open(ada, &limits).unwrap_err(), Refusal::User(2));
        let _b1 = connections.open(bob, &limits).unwrap();
        assert_eq!(connections.open(bob, &limits).unwrap_err(), Refusal::Total(3));
        drop(a1);
        assert_eq!(connections.total(), 2);
        let _b2 = connections.open(bob, &limits).unwrap();
        assert_eq!(connections.users().get(&ada), Some(&1));
    }

    fn counting(reads: Arc<AtomicU64>) -> FetchSnapshot {
        Arc::new(move |user: UserId| {
            let reads = reads.clone();
            async move {
                reads.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(Utf8Bytes::from(format!("snapshot of {user}")))
            }
            .boxed()
        })
    }

    #[tokio::test]
    async fn sockets_of_one_user_share_a_read_unless_an_update_went_out_since_it_began() {
        let reads = Arc::new(AtomicU64::new(0));
        let snapshots = Arc::new(Snapshots::new(counting(reads.clone())));
        let ada = UserId::new_random();
        let together: Vec<_> = (0..20)
            .map(|_| {
                let snapshots = snapshots.clone();
                tokio::spawn(async move { snapshots.get(ada, 7).await })
            })
            .collect();
        for socket in together {
            assert_eq!(socket.await.unwrap().unwrap().as_str(), format!("snapshot of {ada}"));
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1, "20 sockets, one query");

        // An update went out while a read was under way: a socket that asks after it does
        // not take the older read.
        let first = tokio::spawn({
            let snapshots = snapshots.clone();
            async move { snapshots.get(ada, 8).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        snapshots.get(ada, 9).await.unwrap();
        first.await.unwrap().unwrap();
        assert_eq!(reads.load(Ordering::SeqCst), 3);
        // Another user's read is their own.
        snapshots.get(UserId::new_random(), 9).await.unwrap();
        assert_eq!(reads.load(Ordering::SeqCst), 4);
    }
}
