//! The credentials file: the access and refresh tokens of one login, kept between commands.
//!
//! It lives at `$XDG_CONFIG_HOME/iaasctl/credentials` (or `~/.config/iaasctl/credentials`),
//! readable by its owner only: the directory is created `0700` and the file written `0600`.
//! A write goes to a temporary file that is renamed over the old one, so a crash mid-write never
//! leaves a half-written file, and the refresh token (which rotates on every refresh) is never
//! lost between the two.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{CliError, Result};

/// How long before its expiry an access token is already refreshed, so a request never leaves
/// with a token that expires on the way (and small clock skew does not matter).
pub const REFRESH_MARGIN_SECS: i64 = 30;

/// The tokens of one login.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// The platform they are for; another `--url` is not logged in.
    pub url: String,
    /// Who logged in.
    pub username: String,
    /// The access token (JWT).
    pub access_token: String,
    /// When the access token expires.
    pub access_expires_at: DateTime<Utc>,
    /// The refresh token (rotated on every refresh).
    pub refresh_token: String,
    /// When the refresh session ends at the latest.
    pub refresh_expires_at: DateTime<Utc>,
}

impl Credentials {
    /// Whether the access token must be refreshed before a request made at `now`.
    pub fn needs_refresh(&self, now: DateTime<Utc>) -> bool {
        now + Duration::seconds(REFRESH_MARGIN_SECS) >= self.access_expires_at
    }
}

impl std::fmt::Debug for Credentials {
    // Tokens are secrets: a debug print (a log line, a panic message) must not carry them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("access_token", &"<redacted>")
            .field("access_expires_at", &self.access_expires_at)
            .field("refresh_token", &"<redacted>")
            .field("refresh_expires_at", &self.refresh_expires_at)
            .finish()
    }
}

/// Where credentials are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialStore {
    path: PathBuf,
}

impl CredentialStore {
    /// A store in the file `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The store at its documented place, found through the process environment.
    pub fn default_location() -> Result<Self> {
        Self::from_lookup(|key| std::env::var_os(key).map(PathBuf::from))
    }

    /// The store at its documented place, found through `lookup` (the environment, or a map in
    /// tests): `$XDG_CONFIG_HOME/iaasctl/credentials`, else `$HOME/.config/iaasctl/credentials`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<PathBuf>) -> Result<Self> {
        // The XDG spec says a relative XDG_CONFIG_HOME is invalid and must be ignored.
        let base = lookup("XDG_CONFIG_HOME")
            .filter(|dir| dir.is_absolute())
            .or_else(|| {
                lookup("HOME")
                    .filter(|home| !home.as_os_str().is_empty())
                    .map(|h| h.join(".config"))
            })
            .ok_or(CliError::NoConfigDir)?;
        Ok(Self::new(base.join("iaasctl").join("credentials")))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored credentials, or `None` when nobody is logged in.
    pub fn load(&self) -> Result<Option<Credentials>> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CliError::Credentials {
                    action: "read",
                    path: self.path.clone(),
                    source,
                });
            }
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| CliError::CredentialsDamaged { path: self.path.clone(), source })
    }

    /// Replaces the stored credentials with `credentials`.
    pub fn save(&self, credentials: &Credentials) -> Result<()> {
        let fail =
            |source| CliError::Credentials { action: "write", path: self.path.clone(), source };
        let json = serde_json::to_vec_pretty(credentials)
            .map_err(|err| fail(std::io::Error::other(err)))?;
        if let Some(dir) = self.path.parent() {
            create_private_dir(dir).map_err(fail)?;
        }
        let temp = self.path.with_extension(format!("tmp{}", std::process::id()));
        // A temporary file left by a crashed run may have any mode: start afresh.
        match fs::remove_file(&temp) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(fail(err)),
        }
        let written = (|| {
            let mut file = private_file_options().open(&temp)?;
            file.write_all(&json)?;
            file.sync_all()?;
            fs::rename(&temp, &self.path)
        })();
        if let Err(err) = written {
            // Best effort: the temporary file holds tokens; the write error is what is reported.
            let _ = fs::remove_file(&temp);
            return Err(fail(err));
        }
        Ok(())
    }

    /// Removes the stored credentials; `false` when there were none.
    pub fn remove(&self) -> Result<bool> {
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => {
                Err(CliError::Credentials { action: "remove", path: self.path.clone(), source })
            }
        }
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    fs::create_dir_all(dir)
}

#[cfg(unix)]
fn private_file_options() -> fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true).mode(0o600);
    options
}

#[cfg(not(unix))]
fn private_file_options() -> fs::OpenOptions {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(now: DateTime<Utc>) -> Credentials {
        Credentials {
            url: "http://127.0.0.1:8080".into(),
            username: "ada".into(),
            access_token: "a.b.c".into(),
            access_expires_at: now + Duration::minutes(15),
            refresh_token: "secret-refresh".into(),
            refresh_expires_at: now + Duration::days(7),
        }
    }

    fn temp_store() -> (PathBuf, CredentialStore) {
        let dir = std::env::temp_dir().join(iaas_testkit::isolation::unique_name("iaasctl-creds"));
        let store = CredentialStore::new(dir.join("iaasctl").join("credentials"));
        (dir, store)
    }

    #[test]
    fn saved_credentials_read_back_and_only_the_owner_may_read_them() {
        let (dir, store) = temp_store();
        assert_eq!(store.load().unwrap(), None, "nothing stored yet");
        let credentials = sample(Utc::now());
        store.save(&credentials).unwrap();
        store.save(&credentials).unwrap(); // a second login replaces the file
        assert_eq!(store.load().unwrap(), Some(credentials));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let file_mode = fs::metadata(store.path()).unwrap().permissions().mode() & 0o777;
            assert_eq!(file_mode, 0o600);
            let dir_mode =
                fs::metadata(store.path().parent().unwrap()).unwrap().permissions().mode() & 0o777;
            assert_eq!(dir_mode, 0o700);
        }
        assert!(store.remove().unwrap());
        assert!(!store.remove().unwrap(), "removing twice reports there was nothing");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_damaged_file_is_reported_with_its_path() {
        let (dir, store) = temp_store();
        fs::create_dir_all(store.path().parent().unwrap()).unwrap();
        fs::write(store.path(), "not json").unwrap();
        let err = store.load().unwrap_err();
        assert!(matches!(err, CliError::CredentialsDamaged { .. }), "{err}");
        assert!(err.to_string().contains(&store.path().display().to_string()));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_location_follows_xdg_then_home() {
        let xdg = CredentialStore::from_lookup(|key| match key {
            "XDG_CONFIG_HOME" => Some("/cfg".into()),
            "HOME" => Some("/home/ada".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(xdg.path(), Path::new("/cfg/iaasctl/credentials"));
        let relative_xdg = CredentialStore::from_lookup(|key| match key {
            "XDG_CONFIG_HOME" => Some("cfg".into()),
            "HOME" => Some("/home/ada".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(relative_xdg.path(), Path::new("/home/ada/.config/iaasctl/credentials"));
        let none = CredentialStore::from_lookup(|_| None);
        assert!(matches!(none, Err(CliError::NoConfigDir)));
    }

    #[test]
    fn a_token_is_refreshed_shortly_before_it_expires() {
        let now = Utc::now();
        let credentials = sample(now);
        assert!(!credentials.needs_refresh(now));
        assert!(!credentials.needs_refresh(now + Duration::minutes(14)));
        assert!(credentials.needs_refresh(now + Duration::minutes(15) - Duration::seconds(10)));
        assert!(credentials.needs_refresh(now + Duration::hours(1)));
    }

    #[test]
    fn debug_output_hides_the_tokens() {
        let text = format!("{:?}", sample(Utc::now()));
        assert!(!text.contains("secret-refresh") && !text.contains("a.b.c"), "{text}");
    }
}
