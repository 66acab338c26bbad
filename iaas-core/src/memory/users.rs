use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::lock;
use crate::error::{Error, Result};
use crate::id::UserId;
use crate::repository::UserRepository;
use crate::user::User;

/// [`UserRepository`] in a hash map.
#[derive(Debug, Default)]
pub struct MemoryUserRepository {
    users: Mutex<HashMap<UserId, User>>,
}

impl MemoryUserRepository {
    /// An empty repository.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl UserRepository for MemoryUserRepository {
    async fn create_user(&self, user: &User) -> Result<()> {
        let mut users = lock(&self.users);
        if users.values().any(|u| u.username == user.username) {
            return Err(Error::conflict("user", &user.username, "username is taken"));
        }
        if users.contains_key(&user.id) {
            return Err(Error::conflict("user", user.id, "id already exists"));
        }
        users.insert(user.id, user.clone());
        Ok(())
    }

    async fn get_user(&self, id: UserId) -> Result<Option<User>> {
        Ok(lock(&self.users).get(&id).cloned())
    }

    async fn find_user_by_username(&self, username: &str) -> Result<Option<User>> {
        Ok(lock(&self.users).values().find(|u| u.username == username).cloned())
    }

    async fn set_password_hash(
        &self,
        id: UserId,
        password_hash: &str,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let mut users = lock(&self.users);
        let user = users.get_mut(&id).ok_or_else(|| Error::not_found("user", id))?;
        user.password_hash = password_hash.to_owned();
        user.password_changed_at = at;
        Ok(())
    }

    async fn set_scopes(&self, id: UserId, scopes: &[String]) -> Result<()> {
        let mut users = lock(&self.users);
        let user = users.get_mut(&id).ok_or_else(|| Error::not_found("user", id))?;
        user.scopes = scopes.to_vec();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> User {
        let now = Utc::now();
        User {
            id: UserId::new_random(),
            username: name.into(),
            password_hash: "$argon2id$x".into(),
            scopes: vec![],
            created_at: now,
            password_changed_at: now,
        }
    }

    #[tokio::test]
    async fn a_duplicate_username_is_a_conflict() {
        let repo = MemoryUserRepository::new();
        repo.create_user(&user("ada")).await.unwrap();
        let err = repo.create_user(&user("ada")).await.unwrap_err();
        assert!(matches!(err, Error::Conflict { entity: "user", .. }), "{err}");
    }

    #[tokio::test]
    async fn users_are_found_by_id_and_name() {
        let repo = MemoryUserRepository::new();
        let ada = user("ada");
        repo.create_user(&ada).await.unwrap();
        assert_eq!(repo.get_user(ada.id).await.unwrap(), Some(ada.clone()));
        assert_eq!(repo.find_user_by_username("ada").await.unwrap(), Some(ada));
        assert_eq!(repo.find_user_by_username("bob").await.unwrap(), None);
    }

    #[tokio::test]
    async fn changing_the_password_of_an_unknown_user_is_not_found() {
        let repo = MemoryUserRepository::new();
        let err = repo.set_password_hash(UserId::new_random(), "h", Utc::now()).await.unwrap_err();
        assert!(matches!(err, Error::NotFound { entity: "user", .. }));
    }

    #[tokio::test]
    async fn changing_the_password_stores_the_new_hash_and_time() {
        let repo = MemoryUserRepository::new();
        let ada = user("ada");
        repo.create_user(&ada).await.unwrap();
        let later = ada.created_at + chrono::Duration::hours(1);
        repo.set_password_hash(ada.id, "$argon2id$new", later).await.unwrap();
        let stored = repo.get_user(ada.id).await.unwrap().unwrap();
        assert_eq!(stored.password_hash, "$argon2id$new");
        assert_eq!(stored.password_changed_at, later);
    }
}
