//! Real services for the iaas-rs integration tests.
//!
//! Each test asks for the service it needs and gets it from one of two places:
//!
//! 1. **An environment variable** naming a running service. `scripts/test.sh` starts every
//!    service on this machine once and exports these, so the suite does not start a container
//!    per test:
//!
//!    | service       | variable                      | example                                      |
//!    |---------------|-------------------------------|----------------------------------------------|
//!    | Redis         | `IAAS_TEST_REDIS_URL`         | `redis://127.0.0.1:6379`                     |
//!    | Kafka broker  | `IAAS_TEST_KAFKA_BROKERS`     | `127.0.0.1:9092`                             |
//!    | PostgreSQL    | `IAAS_TEST_POSTGRES_URL`      | `postgres://iaas:iaas@127.0.0.1:5432/iaas`   |
//!    | Docker engine | `DOCKER_HOST`                 | `unix:///var/run/docker.sock`                |
//!    | Elasticsearch | `IAAS_TEST_ELASTICSEARCH_URL` | `http://127.0.0.1:9200`                      |
//!
//! 2. **Otherwise a container** started with testcontainers from a configurable image
//!    (`IAAS_TEST_REDIS_IMAGE`, `IAAS_TEST_KAFKA_IMAGE`, `IAAS_TEST_POSTGRES_IMAGE`; the
//!    defaults are the official Docker Hub images, so the suite works on a laptop). The
//!    container lives as long as the returned [`Service`] and is removed when it is dropped.
//!
//! A test that cannot get its service fails with a [`TestkitError`] naming the variable to set.
//! Elasticsearch is the exception: no server can be started where these tests usually run, so
//! [`elasticsearch`] returns `None` and prints why the live tests are skipped.
//!
//! Fault tests that kill and restart a service get one of their own: [`RestartableRedis`] is a
//! Redis container (from `IAAS_TEST_REDIS_IMAGE`) on a fixed port that survives `kill` and
//! `restart`, so no server binary is needed on the host; [`tansu::PrivateBroker`] is a tansu
//! broker (the binary `scripts/services.sh` builds) on its own port and storage file.
//!
//! Tests share services, so [`isolation`] hands out unique key prefixes, topic names, labels
//! and databases, and [`wait`] polls for an outcome with a deadline instead of sleeping.
//!
//! For tests of servers: [`process`] runs a server binary until its `addr=` log line, [`http`]
//! sends it requests over a real socket, and [`openapi`] checks a hand-written OpenAPI
//! document against the routes the code serves.

mod docker;
mod elasticsearch;
mod error;
pub mod http;
pub mod isolation;
mod kafka;
pub mod openapi;
mod postgres;
pub mod process;
mod redis;
mod service;
mod skip;
pub mod tansu;
pub mod wait;

pub use docker::{BUSYBOX_IMAGE_VAR, busybox_image, docker};
pub use elasticsearch::{ELASTICSEARCH_URL_VAR, elasticsearch};
pub use error::TestkitError;
pub use kafka::{KAFKA_BROKERS_VAR, KAFKA_IMAGE_VAR, kafka, start_kafka_container};
pub use postgres::{
    POSTGRES_IMAGE_VAR, POSTGRES_URL_VAR, TestDatabase, postgres, start_postgres_container,
};
pub use redis::{REDIS_IMAGE_VAR, REDIS_URL_VAR, RestartableRedis, redis, start_redis_container};
pub use service::{Service, Source};
pub use skip::{STRICT_VAR, skip_fault_test};
