//! Logins' endings told as they happen, so whatever lives as long as a login (a live-status
//! socket) ends with it at once instead of asking about it now and then.
//!
//! A session store that can tell owns a [`LoginNewsHub`] and [`tells`](LoginNewsHub::tell) it
//! each ending; any number of listeners [`listen`](LoginNewsHub::listen). A teller that hears the
//! endings over a connection (another process's logouts, through Redis) also says when it stopped
//! hearing ([`LoginNews::Deaf`]) and when it hears again ([`LoginNews::Resumed`]): endings between
//! the two were not told, so a listener asks about every login it holds once it resumes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::broadcast;
use uuid::Uuid;

use crate::UserId;

/// News a listener keeps up to before it lags (and then asks about every login it holds).
const NEWS_BACKLOG: usize = 1024;

/// One piece of news about logins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginNews {
    /// `user`'s login `session` ended (a logout, the session revoked, a refresh token reused).
    Ended {
        /// Whose login.
        user: UserId,
        /// The login (the refresh session family).
        session: Uuid,
    },
    /// Every login of `user` ended (a logout-all, a password change).
    AllEnded {
        /// Whose logins.
        user: UserId,
    },
    /// The teller stopped hearing endings (its connection dropped): none is told until
    /// [`LoginNews::Resumed`].
    Deaf,
    /// The teller hears endings again; those of the gap were not told.
    Resumed,
}

/// Where a session store tells its logins' endings; cloning shares it.
#[derive(Debug, Clone)]
pub struct LoginNewsHub {
    news: broadcast::Sender<LoginNews>,
    hearing: Arc<AtomicBool>,
}

/// A listener's end of a [`LoginNewsHub`].
#[derive(Debug)]
pub struct LoginNewsFeed {
    /// The news from the moment of [`LoginNewsHub::listen`] on.
    pub news: broadcast::Receiver<LoginNews>,
    hearing: Arc<AtomicBool>,
}

impl LoginNewsFeed {
    /// Whether the teller hears endings now; when not, a [`LoginNews::Resumed`] will say when
    /// it does. What a listener that lagged asks: a `Deaf` or `Resumed` may be among the news
    /// it lost. The flag changes before the news is sent, so a listener that finds it true may
    /// still receive the `Resumed` that turned it so.
    pub fn hearing(&self) -> bool {
        self.hearing.load(Ordering::SeqCst)
    }
}

/// A hub whose teller hears from the start: one in the process where logins end.
impl Default for LoginNewsHub {
    fn default() -> Self {
        Self::new(true)
    }
}

impl LoginNewsHub {
    /// A hub whose teller hears endings from the start (`hearing`) or only from its first
    /// [`LoginNews::Resumed`].
    pub fn new(hearing: bool) -> Self {
        let (news, _) = broadcast::channel(NEWS_BACKLOG);
        Self { news, hearing: Arc::new(AtomicBool::new(hearing)) }
    }

    /// Tells every listener `news`; nothing happens without listeners.
    pub fn tell(&self, news: LoginNews) {
        match news {
            LoginNews::Deaf => self.hearing.store(false, Ordering::SeqCst),
            LoginNews::Resumed => self.hearing.store(true, Ordering::SeqCst),
            LoginNews::Ended { .. } | LoginNews::AllEnded { .. } => {}
        }
        // An error only says nobody listens.
        let _ = self.news.send(news);
    }

    /// Listens from now on.
    pub fn listen(&self) -> LoginNewsFeed {
        // Subscribed before the flag is read: a change after the read arrives as news.
        let news = self.news.subscribe();
        LoginNewsFeed { news, hearing: self.hearing.clone() }
    }

    /// How many listen now.
    pub fn listeners(&self) -> usize {
        self.news.receiver_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn listeners_hear_what_is_told_after_they_listen_and_whether_the_teller_hears() {
        let hub = LoginNewsHub::new(false);
        let user = UserId::new_random();
        hub.tell(LoginNews::AllEnded { user });
        let mut feed = hub.listen();
        assert!(!feed.hearing());
        assert_eq!(hub.listeners(), 1);
        hub.tell(LoginNews::Resumed);
        let session = Uuid::new_v4();
        hub.tell(LoginNews::Ended { user, session });
        assert_eq!(feed.news.recv().await.ok(), Some(LoginNews::Resumed));
        assert_eq!(feed.news.recv().await.ok(), Some(LoginNews::Ended { user, session }));
        assert!(hub.listen().hearing() && feed.hearing());
        hub.tell(LoginNews::Deaf);
        assert!(!hub.listen().hearing() && !feed.hearing());
    }
}
