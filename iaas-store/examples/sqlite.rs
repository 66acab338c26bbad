//! iaas-store in a tokio program of your own: the embedded SQLite store behind the iaas-core
//! ports, without iaas-platform.
//!
//! It opens a fresh database in a temporary directory (the migrations run on open), stores a
//! user with a quota override, creates instances within that quota, starts one, then reopens the
//! file to show that the instances and the outbox of events survived, and drains the outbox the
//! way a relay does.
//!
//! Run it with `cargo run -p iaas-store --example sqlite`. It needs nothing but this crate
//! (and iaas-core, whose ports it implements): SQLite is compiled in, and the temporary
//! directory is removed at the end.
#![allow(clippy::print_stdout, reason = "an example reports what it did")]

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use iaas_core::{
    EventAction, InfrastructureEvent, Instance, InstanceName, InstanceRepository, InstanceSpec,
    InstanceStatus, NginxSpec, Outbox, Quota, QuotaOverride, QuotaRepository, Resources,
    StatusChange, User, UserId, UserRepository,
};
use iaas_store::{SqliteConfig, SqliteStore};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = TempDir::new("iaas-store-example")?;
    let mut config = SqliteConfig::new(dir.path().join("iaas.db"));
    config.max_connections = 2;
    let store = SqliteStore::open(&config).await?;
    println!("opened {}", config.path.display());

    // A user (the password hash would come from iaas-auth) whose quota an administrator
    // lowered to two instances.
    let now = Utc::now();
    let ada = User {
        id: UserId::new_random(),
        username: "ada".into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        scopes: vec!["instances:write".into()],
        created_at: now,
        password_changed_at: now,
    };
    store.create_user(&ada).await?;
    let lowered = QuotaOverride { instances: Some(2), ..QuotaOverride::default() };
    store.set_quota_override(ada.id, &lowered, now).await?;

    // Each instance is written with its `created` event in one transaction, and only if it
    // fits the quota: the third one does not.
    let quota = Quota::default().with(&store.quota_override(ada.id).await?.unwrap_or_default());
    let mut created = Vec::new();
    for name in ["web-1", "web-2", "web-3"] {
        let spec = InstanceSpec::Nginx(NginxSpec::default());
        let web = Instance::new(ada.id, InstanceName::new(name)?, spec, Resources::default(), now)?;
        let event = InfrastructureEvent::new(web.id, ada.id, web.kind(), EventAction::Created, now);
        match store.create_instance_within(&web, &event, &quota).await {
            Ok(()) => created.push(web),
            Err(refused) => println!("{name} refused: {refused}"),
        }
    }
    let Some(web) = created.first() else { return Err("no instance was created".into()) };

    // A status change, against the version read, with its `started` event.
    let started = InfrastructureEvent::new(web.id, ada.id, web.kind(), EventAction::Started, now);
    let change = StatusChange {
        id: web.id,
        expected_version: Some(web.version),
        to: InstanceStatus::Running,
        event: started,
        at: Utc::now(),
    };
    store.update_status(change).await?;
    drop(store);

    // Everything is in the file: open it again and read it back.
    let store = SqliteStore::open(&config).await?;
    for instance in store.list_instances_by_owner(ada.id).await? {
        println!("{}: {} (version {})", instance.name, instance.status, instance.version);
    }
    let found = store.find_user_by_username("ada").await?.map(|user| user.id);
    println!("user ada found again: {}", found == Some(ada.id));

    // Relay the outbox: claim, publish (here: print), mark sent.
    println!("{} events waiting", store.stats().await?.pending);
    let claimed = store.claim("example-relay", 100, Duration::from_secs(30)).await?;
    for entry in &claimed {
        println!("  publish #{} {} for {}", entry.seq, entry.event.name(), entry.event.instance_id);
    }
    let seqs: Vec<u64> = claimed.iter().map(|entry| entry.seq).collect();
    store.mark_sent("example-relay", &seqs).await?;
    println!("{} events waiting after the relay", store.stats().await?.pending);
    Ok(())
}

/// A directory under the system's temporary directory, removed with everything in it when
/// dropped (even when the example stops at an error).
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Best effort: a leftover temporary directory is not worth a panic.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
