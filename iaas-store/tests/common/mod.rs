//! Builds each backend for the shared suite: SQLite in a fresh file, PostgreSQL in a fresh
//! database on the test server.

#![allow(dead_code, unreachable_pub, reason = "each test binary uses part of this shared module")]

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use iaas_core::{
    EventAction, InfrastructureEvent, Instance, InstanceName, InstanceRepository, InstanceSpec,
    InstanceStatus, JobQueue, Leases, ManualClock, NginxSpec, Outbox, QuotaRepository, Resources,
    StatusChange, User, UserId, UserRepository,
};
use iaas_store::{PostgresConfig, PostgresStore, SqliteConfig, SqliteStore};
use iaas_testkit::TestDatabase;
use iaas_testkit::isolation::unique_name;

/// What every backend is.
pub trait Store:
    UserRepository + InstanceRepository + Outbox + QuotaRepository + Clone + 'static
{
}
impl<T: UserRepository + InstanceRepository + Outbox + QuotaRepository + Clone + 'static> Store
    for T
{
}

/// What every instance backend is, the in-memory one of iaas-core included.
pub trait InstanceStore: InstanceRepository + Outbox + JobQueue + Leases + 'static {}
impl<T: InstanceRepository + Outbox + JobQueue + Leases + 'static> InstanceStore for T {}

/// Removes the SQLite file (and its WAL) when the test ends.
pub struct SqliteFile(PathBuf);

impl SqliteFile {
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for SqliteFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            // Best effort: a leftover temp file is not worth failing a test over.
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub async fn sqlite(clock: Arc<ManualClock>) -> (SqliteStore, SqliteFile) {
    let dir = std::env::temp_dir().join(unique_name("iaas-store"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("iaas.db");
    let store = SqliteStore::open(&SqliteConfig::new(&path)).await.unwrap().with_clock(clock);
    (store, SqliteFile(path))
}

pub async fn postgres(
    clock: Arc<ManualClock>,
    test: &str,
) -> (PostgresStore, TestDatabase, iaas_testkit::Service) {
    let server = iaas_testkit::postgres().await.unwrap();
    let db = TestDatabase::create(&server, test).await.unwrap();
    let store =
        PostgresStore::connect(&PostgresConfig::new(db.url())).await.unwrap().with_clock(clock);
    (store, db, server)
}

pub fn start_time() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

pub fn user(name: &str) -> User {
    let now = start_time();
    User {
        id: UserId::new_random(),
        username: name.to_owned(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
        scopes: vec!["instances:read".into(), "instances:write".into()],
        created_at: now,
        password_changed_at: now,
    }
}

pub fn nginx(owner: UserId, name: &str) -> Instance {
    Instance::new(
        owner,
        InstanceName::new(name).unwrap(),
        InstanceSpec::Nginx(NginxSpec { site_config: Some("server { listen 80; }".into()) }),
        Resources::default(),
        start_time(),
    )
    .unwrap()
}

pub fn event(instance: &Instance, action: EventAction) -> InfrastructureEvent {
    InfrastructureEvent::new(instance.id, instance.owner, instance.kind(), action, start_time())
        .with_metadata("container_name", format!("iaas-{}", instance.name))
}

pub fn change(instance: &Instance, expected: Option<u64>, to: InstanceStatus) -> StatusChange {
    StatusChange {
        id: instance.id,
        expected_version: expected,
        to,
        event: event(instance, EventAction::for_status(to)),
        at: start_time(),
    }
}

/// Instantiates a generic test body `$body(store, clock)` for both backends.
#[macro_export]
macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let clock = std::sync::Arc::new(iaas_core::ManualClock::new($crate::common::start_time()));
                    let (store, _file) = $crate::common::sqlite(clock.clone()).await;
                    super::$test(store, clock).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let clock = std::sync::Arc::new(iaas_core::ManualClock::new($crate::common::start_time()));
                    let (store, db, _server) = $crate::common::postgres(clock.clone(), stringify!($test)).await;
                    super::$test(store.clone(), clock).await;
                    store.pool().close().await;
                    db.drop_database().await.unwrap();
                }
            )*
        }
    };
}

/// Instantiates a generic test body `$body(store, clock)` for every instance backend: the
/// in-memory repository of iaas-core beside SQLite and PostgreSQL, so the three keep one
/// contract.
#[macro_export]
macro_rules! on_every_instance_backend {
    ($($test:ident),* $(,)?) => {
        mod every_instance_backend {
            mod memory {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $test() {
                        let clock = std::sync::Arc::new(iaas_core::ManualClock::new($crate::common::start_time()));
                        let store = iaas_core::memory::MemoryInstanceRepository::with_clock(clock.clone());
                        super::super::$test(store, clock).await;
                    }
                )*
            }
            mod sqlite {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $test() {
                        let clock = std::sync::Arc::new(iaas_core::ManualClock::new($crate::common::start_time()));
                        let (store, _file) = $crate::common::sqlite(clock.clone()).await;
                        super::super::$test(store, clock).await;
                    }
                )*
            }
            mod postgres {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $test() {
                        let clock = std::sync::Arc::new(iaas_core::ManualClock::new($crate::common::start_time()));
                        let (store, db, _server) = $crate::common::postgres(clock.clone(), stringify!($test)).await;
                        super::super::$test(store.clone(), clock).await;
                        store.pool().close().await;
                        db.drop_database().await.unwrap();
                    }
                )*
            }
        }
    };
}
