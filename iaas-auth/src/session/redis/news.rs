//! The ended logins of every process sharing the Redis session store, heard on its channel.
//!
//! The scripts that end logins `PUBLISH` each ending on `{prefix}ended` in the same atomic step:
//! `"{user} {family}"` for one login, `"{user}"` for all of a user's. One task per store listens
//! on a connection of its own (started by the first [`SessionStore::login_news`] call) and
//! tells the store's [`LoginNewsHub`]. Redis keeps no pub/sub message for a subscriber that is
//! not connected, so the task tells [`LoginNews::Deaf`] when its connection is lost or stops
//! answering pings, and [`LoginNews::Resumed`] once subscribed again: listeners then ask about
//! every login they hold. Gauge `iaas_auth_login_news_hearing` is 1 while subscribed.
//!
//! [`SessionStore::login_news`]: super::super::SessionStore::login_news

use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt as _;
use iaas_core::{LoginNews, LoginNewsFeed, LoginNewsHub, UserId};
use redis::aio::PubSub;
use uuid::Uuid;

/// How often a quiet subscription is pinged, to find a connection that died without closing
/// (a dropped NAT entry): endings published on it meanwhile are lost, so this plus the call
/// timeout bounds how late they are found (by the pass listeners make once it is back).
const PING_EVERY: Duration = Duration::from_secs(2);
/// A subscription that lasted less than this was lost too soon for its retries to start over
/// from the shortest wait: a server that keeps cutting it is not hammered.
const HELD_LONG_ENOUGH: Duration = Duration::from_secs(10);
/// The first wait before subscribing again, doubled up to [`RETRY_AT_MOST`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_AT_MOST: Duration = Duration::from_secs(5);

/// The channel the scripts publish endings on.
pub(super) fn channel(key_prefix: &str) -> String {
    format!("{key_prefix}ended")
}

/// The listening task of one store, started on the first listener and stopped with the store.
pub(super) struct EndingsHeard {
    client: redis::Client,
    channel: String,
    timeout: Duration,
    hub: LoginNewsHub,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl EndingsHeard {
    pub(super) fn new(client: redis::Client, channel: String, timeout: Duration) -> Self {
        Self { client, channel, timeout, hub: LoginNewsHub::new(false), task: Mutex::new(None) }
    }

    /// A feed of the endings; starts the listening task if it does not run. Must be called
    /// within a Tokio runtime.
    pub(super) fn listen(&self) -> LoginNewsFeed {
        let feed = self.hub.listen();
        let mut task = self.task.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if task.as_ref().is_none_or(tokio::task::AbortHandle::is_finished) {
            let listening =
                hear(self.client.clone(), self.channel.clone(), self.timeout, self.hub.clone());
            *task = Some(tokio::spawn(listening).abort_handle());
        }
        feed
    }
}

impl Drop for EndingsHeard {
    fn drop(&mut self) {
        let task = self.task.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(task) = task.take() {
            task.abort();
        }
    }
}

/// Tells [`LoginNews::Deaf`] when dropped.
struct DeafAtEnd(LoginNewsHub);

impl Drop for DeafAtEnd {
    fn drop(&mut self) {
        self.0.tell(LoginNews::Deaf);
        metrics::gauge!("iaas_auth_login_news_hearing").set(0.0);
    }
}

/// Subscribes, relays until the subscription is lost, and subscribes again, forever.
async fn hear(client: redis::Client, channel: String, timeout: Duration, hub: LoginNewsHub) {
    // However this task ends (the store dropped, a panic), listeners stop counting on it.
    let _deaf_at_end = DeafAtEnd(hub.clone());
    let mut retry = RETRY_FIRST;
    let mut failures = 0_u32;
    loop {
        match subscribe(&client, &channel, timeout).await {
            Ok(pubsub) => {
                if failures > 0 {
                    tracing::info!(%channel, "hearing ended logins again");
                }
                failures = 0;
                metrics::gauge!("iaas_auth_login_news_hearing").set(1.0);
                hub.tell(LoginNews::Resumed);
                let held = std::time::Instant::now();
                let lost = relay(pubsub, &channel, timeout, &hub).await;
                hub.tell(LoginNews::Deaf);
                metrics::gauge!("iaas_auth_login_news_hearing").set(0.0);
                if held.elapsed() >= HELD_LONG_ENOUGH {
                    retry = RETRY_FIRST;
                }
                tracing::warn!(
                    %channel, reason = %lost,
                    "stopped hearing ended logins; live sockets ask about their logins each \
                     check interval until it is back"
                );
            }
            Err(error) => {
                failures += 1;
                // The first failure of a run is worth a warning; the retries that follow it
                // are not.
                if failures == 1 {
                    tracing::warn!(%channel, %error, "cannot subscribe to ended logins; retrying");
                } else {
                    tracing::debug!(%channel, %error, failures, "cannot subscribe to ended logins");
                }
            }
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(RETRY_AT_MOST);
    }
}

async fn subscribe(
    client: &redis::Client,
    channel: &str,
    timeout: Duration,
) -> Result<PubSub, String> {
    let subscribing = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    match tokio::time::timeout(timeout, subscribing).await {
        Ok(Ok(pubsub)) => Ok(pubsub),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// Tells `hub` each ending heard until the connection is lost; why it was lost.
async fn relay(pubsub: PubSub, channel: &str, timeout: Duration, hub: &LoginNewsHub) -> String {
    let (mut sink, mut messages) = pubsub.split();
    let mut pings = tokio::time::interval(PING_EVERY);
    pings.reset();
    loop {
        tokio::select! {
            message = messages.next() => match message {
                None => return "the connection closed".to_owned(),
                Some(message) => match parse(message.get_payload_bytes()) {
                    Some(news) => hub.tell(news),
                    None => tracing::warn!(%channel, "ignored a message that names no login"),
                },
            },
            _ = pings.tick() => match tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => return format!("ping failed: {error}"),
                Err(_) => return format!("no answer to a ping within {timeout:?}"),
            },
        }
    }
}

/// `"{user} {family}"` or `"{user}"`.
fn parse(payload: &[u8]) -> Option<LoginNews> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.split(' ');
    let user: UserId = parts.next()?.parse().ok()?;
    let news = match parts.next() {
        None => LoginNews::AllEnded { user },
        Some(family) => LoginNews::Ended { user, session: family.parse::<Uuid>().ok()? },
    };
    parts.next().is_none().then_some(news)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_one_login_or_all_of_a_user_and_anything_else_is_refused() {
        let user = UserId::new_random();
        let family = Uuid::new_v4();
        assert_eq!(
            parse(format!("{user} {family}").as_bytes()),
            Some(LoginNews::Ended { user, session: family })
        );
        assert_eq!(parse(user.to_string().as_bytes()), Some(LoginNews::AllEnded { user }));
        for bad in [
            String::new(),
            "nobody".to_owned(),
            format!("{user} not-a-uuid"),
            format!("{user} {family} extra"),
            format!("{user}  {family}"),
        ] {
            assert_eq!(parse(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(parse(&[0xff, 0xfe]), None);
    }
}
