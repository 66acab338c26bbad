//! The session-store contract, run against the in-process store and real Redis alike.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use chrono::{DateTime, Duration, Utc};
use common::{Store, start_time};
use iaas_auth::{Rotate, Rotation, Session, TokenHash};
use iaas_core::{LoginNews, LoginNewsFeed, UserId};
use uuid::Uuid;

on_every_backend!(
    a_refresh_rotates_to_the_successor,
    reusing_a_rotated_token_revokes_its_whole_family,
    a_racing_refresh_inside_the_grace_window_gets_the_same_successor,
    an_idle_session_dies,
    a_family_dies_at_its_absolute_lifetime,
    revoke_all_kills_every_session_and_later_writes_of_older_families,
    logout_revokes_only_its_family,
    revoking_one_session_ends_that_family_of_its_user_only,
    a_family_is_live_until_it_ends_in_any_way,
    fifty_concurrent_refreshes_make_at_most_one_family_member,
    fifty_concurrent_refreshes_inside_the_grace_window_share_one_successor,
    failed_logins_are_counted_per_window_and_cleared,
    every_login_the_store_ends_is_told_to_its_listeners_and_nothing_else,
);

const IDLE: Duration = Duration::days(7);
const LIFETIME: Duration = Duration::days(30);

fn session(user: UserId, at: DateTime<Utc>) -> Session {
    Session {
        user,
        family: Uuid::new_v4(),
        created_at: at,
        family_created_at: at,
        expires_at: at + LIFETIME,
        client: "127.0.0.1".into(),
    }
}

fn rotate<'a>(
    from: &'a TokenHash,
    to: &'a TokenHash,
    now: DateTime<Utc>,
    grace: i64,
) -> Rotate<'a> {
    Rotate {
        presented: from,
        successor: to,
        now,
        idle_timeout: IDLE,
        reuse_grace: Duration::seconds(grace),
    }
}

/// A login: a new family with one token.
async fn login(store: &Store, user: UserId, at: DateTime<Utc>) -> (TokenHash, Session) {
    let hash = TokenHash::of(&Uuid::new_v4().to_string());
    let s = session(user, at);
    store.create(&hash, &s, IDLE).await.unwrap();
    (hash, s)
}

fn hash(label: &str) -> TokenHash {
    TokenHash::of(&format!("{label}-{}", Uuid::new_v4()))
}

async fn a_refresh_rotates_to_the_successor(store: Store) {
    let user = UserId::new_random();
    let (t0, s0) = login(&store, user, start_time()).await;
    let t1 = hash("t1");
    let later = start_time() + Duration::hours(1);
    let Rotation::Rotated(s1) = store.rotate(rotate(&t0, &t1, later, 5)).await.unwrap() else {
        panic!("not rotated")
    };
    assert_eq!((s1.user, s1.family, s1.created_at), (user, s0.family, later));
    assert_eq!(s1.expires_at, s0.expires_at, "the absolute limit is the family's");
    // Only the current member is listed.
    let listed = store.list(user, later).await.unwrap();
    assert_eq!(listed, vec![s1.clone()]);
    // The successor rotates in turn.
    let t2 = hash("t2");
    assert!(matches!(
        store.rotate(rotate(&t1, &t2, later, 5)).await.unwrap(),
        Rotation::Rotated(_)
    ));
}

async fn reusing_a_rotated_token_revokes_its_whole_family(store: Store) {
    let user = UserId::new_random();
    let (t0, s0) = login(&store, user, start_time()).await;
    let (other, _) = login(&store, user, start_time()).await;
    let t1 = hash("t1");
    store.rotate(rotate(&t0, &t1, start_time(), 5)).await.unwrap();

    let late = start_time() + Duration::seconds(6);
    let replay = store.rotate(rotate(&t0, &t1, late, 5)).await.unwrap();
    assert_eq!(replay, Rotation::Reused { user, family: s0.family });
    // The sibling (the legitimate client's current token) is dead too.
    assert_eq!(store.rotate(rotate(&t1, &hash("t2"), late, 5)).await.unwrap(), Rotation::Unknown);
    // Another family of the same user is untouched.
    assert!(matches!(
        store.rotate(rotate(&other, &hash("o1"), late, 5)).await.unwrap(),
        Rotation::Rotated(_)
    ));
}

async fn a_racing_refresh_inside_the_grace_window_gets_the_same_successor(store: Store) {
    let user = UserId::new_random();
    let (t0, _) = login(&store, user, start_time()).await;
    let t1 = hash("t1");
    let Rotation::Rotated(first) = store.rotate(rotate(&t0, &t1, start_time(), 5)).await.unwrap()
    else {
        panic!("not rotated")
    };
    let again = store.rotate(rotate(&t0, &t1, start_time() + Duration::seconds(4), 5)).await;
    assert_eq!(again.unwrap(), Rotation::Repeated(first));
    // A different successor for the same token is not a race but a forgery: reuse.
    let forged = store.rotate(rotate(&t0, &hash("x"), start_time(), 5)).await.unwrap();
    assert!(matches!(forged, Rotation::Reused { .. }), "{forged:?}");
}

async fn an_idle_session_dies(store: Store) {
    let user = UserId::new_random();
    let (t0, _) = login(&store, user, start_time()).await;
    let (t1, _) = login(&store, user, start_time()).await;
    let almost = start_time() + IDLE - Duration::seconds(1);
    assert!(matches!(
        store.rotate(rotate(&t0, &hash("a"), almost, 5)).await.unwrap(),
        Rotation::Rotated(_)
    ));
    let idle = start_time() + IDLE;
    assert_eq!(store.rotate(rotate(&t1, &hash("b"), idle, 5)).await.unwrap(), Rotation::Unknown);
}

async fn a_family_dies_at_its_absolute_lifetime(store: Store) {
    let user = UserId::new_random();
    let (mut current, _) = login(&store, user, start_time()).await;
    // Used every 6 days, never idle, but the family still ends after 30 days.
    let mut now = start_time();
    for step in 0..4 {
        now += Duration::days(6);
        let next = hash(&format!("step{step}"));
        let outcome = store.rotate(rotate(&current, &next, now, 5)).await.unwrap();
        assert!(matches!(outcome, Rotation::Rotated(_)), "day {now}: {outcome:?}");
        current = next;
    }
    now = start_time() + LIFETIME;
    assert_eq!(
        store.rotate(rotate(&current, &hash("end"), now, 5)).await.unwrap(),
        Rotation::Expired
    );
    assert!(store.list(user, now).await.unwrap().is_empty());
}

async fn revoke_all_kills_every_session_and_later_writes_of_older_families(store: Store) {
    let user = UserId::new_random();
    let bystander = UserId::new_random();
    let (a, _) = login(&store, user, start_time()).await;
    let (b, _) = login(&store, user, start_time()).await;
    let (c, _) = login(&store, bystander, start_time()).await;
    let revoke_at = start_time() + Duration::minutes(1);
    assert_eq!(store.revoke_all(user, revoke_at, LIFETIME).await.unwrap(), 2);
    for token in [&a, &b] {
        assert_eq!(
            store.rotate(rotate(token, &hash("n"), revoke_at, 5)).await.unwrap(),
            Rotation::Unknown
        );
    }
    // A login that started before the revocation but was written after it (a race) is dead.
    let (late, _) = login(&store, user, revoke_at - Duration::seconds(1)).await;
    assert_eq!(
        store.rotate(rotate(&late, &hash("n"), revoke_at, 5)).await.unwrap(),
        Rotation::Revoked
    );
    // A login after the revocation lives.
    let (fresh, _) = login(&store, user, revoke_at + Duration::seconds(1)).await;
    assert!(matches!(
        store
            .rotate(rotate(&fresh, &hash("n"), revoke_at + Duration::seconds(2), 5))
            .await
            .unwrap(),
        Rotation::Rotated(_)
    ));
    assert!(
        matches!(
            store.rotate(rotate(&c, &hash("n"), revoke_at, 5)).await.unwrap(),
            Rotation::Rotated(_)
        ),
        "another user's session survives"
    );
}

async fn logout_revokes_only_its_family(store: Store) {
    let user = UserId::new_random();
    let (a, sa) = login(&store, user, start_time()).await;
    let (b, sb) = login(&store, user, start_time() + Duration::seconds(1)).await;
    let revoked = store.revoke_family(&a).await.unwrap().unwrap();
    assert_eq!(revoked.family, sa.family);
    assert_eq!(store.revoke_family(&a).await.unwrap(), None, "idempotent");
    assert_eq!(store.list(user, start_time()).await.unwrap(), vec![sb]);
    assert_eq!(
        store.rotate(rotate(&a, &hash("n"), start_time(), 5)).await.unwrap(),
        Rotation::Unknown
    );
    assert!(matches!(
        store.rotate(rotate(&b, &hash("n"), start_time(), 5)).await.unwrap(),
        Rotation::Rotated(_)
    ));
}

async fn revoking_one_session_ends_that_family_of_its_user_only(store: Store) {
    let (user, stranger) = (UserId::new_random(), UserId::new_random());
    let (a, sa) = login(&store, user, start_time()).await;
    // The family has rotated once: both its records go.
    let a1 = hash("a1");
    assert!(matches!(
        store.rotate(rotate(&a, &a1, start_time(), 5)).await.unwrap(),
        Rotation::Rotated(_)
    ));
    let (b, sb) = login(&store, user, start_time() + Duration::seconds(1)).await;

    assert!(!store.revoke_session(stranger, sa.family).await.unwrap(), "another user's family");
    assert_eq!(store.list(user, start_time()).await.unwrap().len(), 2, "nothing was revoked");
    assert!(!store.revoke_session(user, Uuid::new_v4()).await.unwrap(), "an unknown family");

    assert!(store.revoke_session(user, sa.family).await.unwrap());
    assert!(!store.revoke_session(user, sa.family).await.unwrap(), "already gone");
    assert_eq!(store.list(user, start_time()).await.unwrap(), vec![sb]);
    for token in [&a, &a1] {
        assert_eq!(
            store.rotate(rotate(token, &hash("n"), start_time(), 5)).await.unwrap(),
            Rotation::Unknown
        );
    }
    assert!(matches!(
        store.rotate(rotate(&b, &hash("n"), start_time(), 5)).await.unwrap(),
        Rotation::Rotated(_)
    ));
}

async fn a_family_is_live_until_it_ends_in_any_way(store: Store) {
    let (user, stranger) = (UserId::new_random(), UserId::new_random());
    let now = start_time();
    let (a, sa) = login(&store, user, now).await;
    assert!(store.is_family_live(user, sa.family, now).await.unwrap());
    assert!(!store.is_family_live(stranger, sa.family, now).await.unwrap(), "not the stranger's");
    assert!(!store.is_family_live(user, Uuid::new_v4(), now).await.unwrap(), "unknown");
    // Rotated: still live through its successor.
    let a1 = hash("a1");
    assert!(matches!(store.rotate(rotate(&a, &a1, now, 5)).await.unwrap(), Rotation::Rotated(_)));
    assert!(store.is_family_live(user, sa.family, now).await.unwrap());
    // Past its absolute lifetime: not live.
    assert!(!store.is_family_live(user, sa.family, now + LIFETIME).await.unwrap());
    // Logged out: not live.
    store.revoke_family(&a1).await.unwrap();
    assert!(!store.is_family_live(user, sa.family, now).await.unwrap());
    // Every session revoked (logout-all, password change): not live.
    let (_, sb) = login(&store, user, now).await;
    assert!(store.is_family_live(user, sb.family, now).await.unwrap());
    store.revoke_all(user, now + Duration::seconds(1), LIFETIME).await.unwrap();
    assert!(!store.is_family_live(user, sb.family, now + Duration::seconds(1)).await.unwrap());
}

async fn race(store: &Store, t0: &TokenHash, t1: &TokenHash, grace: i64) -> Vec<Rotation> {
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (store, t0, t1) = (store.clone(), t0.clone(), t1.clone());
            tokio::spawn(async move { store.rotate(rotate(&t0, &t1, start_time(), grace)).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap().unwrap());
    }
    outcomes
}

async fn fifty_concurrent_refreshes_make_at_most_one_family_member(store: Store) {
    let user = UserId::new_random();
    let (t0, _) = login(&store, user, start_time()).await;
    let t1 = hash("t1");
    let outcomes = race(&store, &t0, &t1, 0).await;
    let rotated = outcomes.iter().filter(|o| matches!(o, Rotation::Rotated(_))).count();
    assert_eq!(rotated, 1, "{outcomes:?}");
    // Without a grace window the losers are replays: the family is revoked, nothing survives.
    assert!(
        outcomes.iter().all(|o| matches!(
            o,
            Rotation::Rotated(_) | Rotation::Reused { .. } | Rotation::Unknown
        ))
    );
    assert!(store.list(user, start_time()).await.unwrap().is_empty());
}

async fn fifty_concurrent_refreshes_inside_the_grace_window_share_one_successor(store: Store) {
    let user = UserId::new_random();
    let (t0, _) = login(&store, user, start_time()).await;
    let t1 = hash("t1");
    let outcomes = race(&store, &t0, &t1, 5).await;
    let rotated = outcomes.iter().filter(|o| matches!(o, Rotation::Rotated(_))).count();
    let repeated = outcomes.iter().filter(|o| matches!(o, Rotation::Repeated(_))).count();
    assert_eq!((rotated, repeated), (1, 49), "{outcomes:?}");
    let listed = store.list(user, start_time()).await.unwrap();
    assert_eq!(listed.len(), 1, "exactly one new family member");
}

async fn failed_logins_are_counted_per_window_and_cleared(store: Store) {
    let key = format!("login:user:{}", Uuid::new_v4());
    let window = Duration::minutes(15);
    assert_eq!(store.failures(&key, start_time()).await.unwrap().count, 0);
    for n in 1..=3 {
        let attempts = store.record_failure(&key, window, start_time()).await.unwrap();
        assert_eq!(attempts.count, n);
        assert!(attempts.retry_after > Duration::minutes(14) && attempts.retry_after <= window);
    }
    assert_eq!(store.failures(&key, start_time()).await.unwrap().count, 3);
    store.clear_failures(&key).await.unwrap();
    assert_eq!(store.failures(&key, start_time()).await.unwrap().count, 0);
}

/// Listens to `store` and waits until it hears endings.
async fn listen(store: &Store) -> LoginNewsFeed {
    let mut feed = store.login_news().expect("the store tells the logins it ends");
    // Found hearing, the `Resumed` that made it so may still be on its way: it is taken too.
    let wait = if feed.hearing() { 100 } else { 10_000 };
    match tokio::time::timeout(std::time::Duration::from_millis(wait), feed.news.recv()).await {
        Ok(news) => assert_eq!(news.unwrap(), LoginNews::Resumed),
        Err(_) => assert!(feed.hearing(), "not hearing within 10 s"),
    }
    feed
}

/// The next ending told to `feed`, within 5 s: a `Resumed` of the store's first subscription,
/// still queued when the listener found the store hearing, is passed over.
async fn ended(feed: &mut LoginNewsFeed) -> LoginNews {
    loop {
        let news = told(feed).await;
        if news != LoginNews::Resumed {
            return news;
        }
    }
}

/// The next news of `feed`, within 5 s.
async fn told(feed: &mut LoginNewsFeed) -> LoginNews {
    tokio::time::timeout(std::time::Duration::from_secs(5), feed.news.recv())
        .await
        .expect("news within 5 s")
        .unwrap()
}

async fn every_login_the_store_ends_is_told_to_its_listeners_and_nothing_else(store: Store) {
    let mut feed = listen(&store).await;
    let mut second = listen(&store).await;
    let (user, stranger) = (UserId::new_random(), UserId::new_random());
    let now = start_time();
    // A login, a rotation, a failed revoke of another user's family and of an unknown token end
    // nothing: the first news is the logout that follows them.
    let (a, sa) = login(&store, user, now).await;
    let a1 = hash("a1");
    assert!(matches!(store.rotate(rotate(&a, &a1, now, 5)).await.unwrap(), Rotation::Rotated(_)));
    assert!(!store.revoke_session(stranger, sa.family).await.unwrap());
    assert_eq!(store.revoke_family(&hash("unknown")).await.unwrap(), None);
    store.revoke_family(&a1).await.unwrap();
    let logout = LoginNews::Ended { user, session: sa.family };
    assert_eq!(ended(&mut feed).await, logout);
    assert_eq!(ended(&mut second).await, logout, "every listener is told");

    // One session revoked by its user.
    let (_, sb) = login(&store, user, now).await;
    assert!(store.revoke_session(user, sb.family).await.unwrap());
    assert_eq!(ended(&mut feed).await, LoginNews::Ended { user, session: sb.family });

    // A rotated token presented again: its family is revoked.
    let (c, sc) = login(&store, user, now).await;
    assert!(matches!(
        store.rotate(rotate(&c, &hash("c1"), now, 5)).await.unwrap(),
        Rotation::Rotated(_)
    ));
    let later = now + Duration::minutes(1);
    assert!(matches!(
        store.rotate(rotate(&c, &hash("c2"), later, 5)).await.unwrap(),
        Rotation::Reused { .. }
    ));
    assert_eq!(ended(&mut feed).await, LoginNews::Ended { user, session: sc.family });

    // Logout-all, password change: every login of the user.
    login(&store, user, now).await;
    store.revoke_all(user, later, LIFETIME).await.unwrap();
    assert_eq!(ended(&mut feed).await, LoginNews::AllEnded { user });

    // A login that merely idles out or passes its lifetime is not told by itself; one a
    // refresh finds past its lifetime is (the store ends it then).
    let (d, sd) = login(&store, stranger, now).await;
    assert!(!store.is_family_live(stranger, sd.family, now + LIFETIME).await.unwrap());
    assert_eq!(
        store.rotate(rotate(&d, &hash("d1"), now + LIFETIME, 5)).await.unwrap(),
        Rotation::Expired
    );
    assert_eq!(ended(&mut feed).await, LoginNews::Ended { user: stranger, session: sd.family });
    // Nothing came in between: the next news is the next ending.
    let (e, se) = login(&store, stranger, now).await;
    store.revoke_family(&e).await.unwrap();
    assert_eq!(ended(&mut feed).await, LoginNews::Ended { user: stranger, session: se.family });
}

/// Redis keeps no message for a subscriber that is not connected: the store says when it
/// stopped hearing and when it hears again, whether its connection was cut or the server
/// went down, and tells endings again afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_store_says_when_it_stops_hearing_endings_and_when_it_hears_again() {
    let server = iaas_testkit::RestartableRedis::start(false).await.unwrap();
    let config = iaas_auth::RedisSessionConfig::new(server.url())
        .with_key_prefix(iaas_testkit::isolation::key_prefix("news-faults"));
    let store: Store =
        std::sync::Arc::new(iaas_auth::RedisSessionStore::connect(config).await.unwrap());
    let mut feed = listen(&store).await;
    let user = UserId::new_random();

    // The subscription's connection cut by the server (this server serves this test alone).
    let client = ::redis::Client::open(server.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let killed: i64 = ::redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "pubsub"])
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(killed, 1, "one subscriber: the store's");
    assert_eq!(told(&mut feed).await, LoginNews::Deaf);
    assert_eq!(told(&mut feed).await, LoginNews::Resumed);
    let (a, sa) = login(&store, user, start_time()).await;
    store.revoke_family(&a).await.unwrap();
    assert_eq!(told(&mut feed).await, LoginNews::Ended { user, session: sa.family });

    // The server killed, then started again.
    server.kill().await.unwrap();
    assert_eq!(told(&mut feed).await, LoginNews::Deaf);
    server.restart().await.unwrap();
    assert_eq!(
        tokio::time::timeout(std::time::Duration::from_secs(15), feed.news.recv())
            .await
            .expect("hearing again within 15 s of the restart")
            .unwrap(),
        LoginNews::Resumed
    );
    // The store's own connection fails its first call after the restart and reconnects.
    iaas_testkit::wait::eventually(std::time::Duration::from_secs(10), || {
        store.revoke_all(user, start_time(), LIFETIME)
    })
    .await
    .unwrap();
    assert_eq!(told(&mut feed).await, LoginNews::AllEnded { user });
}
