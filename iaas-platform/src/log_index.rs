//! The event log index the monitoring indexer writes and the search API reads: the embedded
//! SQLite full-text index in the data directory, or Elasticsearch when `elasticsearch_url` is
//! set.
//!
//! Elasticsearch needs its index template (explicit, strict mappings) installed before the first
//! document creates the index; a document written first would create the index with guessed
//! mappings that the template can no longer fix. A down Elasticsearch at start must not stop the
//! platform (auth and provisioning do not need it), so setup is lazy: the start tries once, and
//! if that fails every write tries again first and fails as *unavailable* until it succeeds.
//! The indexer treats unavailable as transient, so the events wait on the bus (the Kafka
//! consumer does not commit, the in-process bus redelivers) instead of being indexed without the
//! template.

use std::sync::Arc;

use async_trait::async_trait;
use iaas_events::monitoring::{
    CountQuery, Counts, ElasticsearchConfig, ElasticsearchLogIndex, IndexError, LogEntry, LogIndex,
    LogPage, LogQuery, SqliteIndexConfig, SqliteLogIndex,
};
use tokio::sync::OnceCell;

use crate::config::Config;
use crate::error::StartError;

/// Opens the configured log index. With Elasticsearch, tries to install the index template
/// and, when Elasticsearch does not answer, logs it and starts anyway (see the module docs).
pub async fn open_log_index(config: &Config) -> Result<Arc<dyn LogIndex>, StartError> {
    match &config.elasticsearch_url {
        None => {
            std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
                path: config.data_dir.display().to_string(),
                source,
            })?;
            let index =
                SqliteLogIndex::open(&SqliteIndexConfig::new(config.data_dir.join("events.db")))
                    .await
                    .map_err(StartError::LogIndex)?;
            Ok(Arc::new(index))
        }
        Some(url) => {
            let mut es = ElasticsearchConfig::new(url.clone());
            es.index.clone_from(&config.elasticsearch_index);
            let index =
                TemplatedIndex::new(ElasticsearchLogIndex::new(es).map_err(StartError::LogIndex)?);
            let url = iaas_core::redact_url(url);
            match index.ensure_template().await {
                Ok(()) => tracing::info!(%url, "event log in Elasticsearch"),
                Err(error) => tracing::warn!(
                    %url,
                    %error,
                    "Elasticsearch is not ready; events wait until its index template is installed"
                ),
            }
            Ok(Arc::new(index))
        }
    }
}

/// Elasticsearch with its index template installed before the first write.
#[derive(Debug)]
struct TemplatedIndex {
    inner: ElasticsearchLogIndex,
    template: OnceCell<()>,
}

impl TemplatedIndex {
    fn new(inner: ElasticsearchLogIndex) -> Self {
        Self { inner, template: OnceCell::new() }
    }

    /// Installs the template unless a call already did; a failure leaves it to the next call.
    async fn ensure_template(&self) -> Result<(), IndexError> {
        self.template.get_or_try_init(|| self.inner.ensure_template()).await.map(drop)
    }
}

#[async_trait]
impl LogIndex for TemplatedIndex {
    async fn index(&self, entries: &[LogEntry]) -> Result<(), IndexError> {
        self.ensure_template().await?;
        self.inner.index(entries).await
    }

    async fn search(&self, query: &LogQuery) -> Result<LogPage, IndexError> {
        self.inner.search(query).await
    }

    async fn counts(&self, query: &CountQuery) -> Result<Counts, IndexError> {
        self.inner.counts(query).await
    }
}

#[cfg(test)]
mod tests {
    //! A fake HTTP endpoint stands in for Elasticsearch here only to prove the wiring (which
    //! URL, which index, when the template is sent); Elasticsearch's behaviour is covered by
    //! iaas-events' contract and live suites.

    use std::path::PathBuf;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    fn config(url: Option<String>) -> Config {
        Config {
            elasticsearch_url: url,
            elasticsearch_index: "wiring-test".to_owned(),
            data_dir: std::env::temp_dir()
                .join(iaas_testkit::isolation::unique_name("iaas-log-index")),
            ..Config::default()
        }
    }

    /// Answers one request with `{"acknowledged":true}` and returns its request line.
    async fn answer_one(listener: &TcpListener) -> String {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        // Read until the end of the head and the declared body.
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            request.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&request);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_owned())
                    })
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if body.len() >= length {
                    break;
                }
            }
            assert!(n > 0, "the client closed before sending a whole request");
        }
        let body = r#"{"acknowledged":true}"#;
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).await.unwrap();
        let text = String::from_utf8_lossy(&request);
        text.lines().next().unwrap().to_owned()
    }

    #[tokio::test]
    async fn without_a_url_the_embedded_index_lives_in_the_data_directory() {
        let config = config(None);
        open_log_index(&config).await.unwrap();
        assert!(config.data_dir.join("events.db").exists());
        std::fs::remove_dir_all(&config.data_dir).unwrap();
    }

    #[tokio::test]
    async fn with_a_url_the_template_goes_to_that_node_at_start() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let config = config(Some(url));
        let (opened, request_line) = tokio::join!(open_log_index(&config), answer_one(&listener));
        opened.unwrap();
        assert!(
            request_line.starts_with("PUT /_index_template/wiring-test-template "),
            "{request_line}"
        );
        assert!(!PathBuf::from(&config.data_dir).join("events.db").exists(), "no embedded index");
    }

    #[tokio::test]
    async fn a_down_node_at_start_does_not_stop_it_and_writes_install_the_template_first() {
        // A port with nothing listening: bind, note the port, close.
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let config = config(Some(format!("http://127.0.0.1:{port}")));
        let index = open_log_index(&config).await.expect("starts although Elasticsearch is down");

        let entry = LogEntry::from_event(&iaas_core::InfrastructureEvent::new(
            iaas_core::InstanceId::new_random(),
            iaas_core::UserId::new_random(),
            iaas_core::InstanceKind::Nginx,
            iaas_core::EventAction::Started,
            iaas_core::Clock::now(&iaas_core::SystemClock),
        ));
        let err = index.index(std::slice::from_ref(&entry)).await.unwrap_err();
        assert!(err.is_transient(), "a down node is retried later: {err}");

        // Once the node answers, the next write sends the template before anything else.
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let write = tokio::spawn({
            let index = index.clone();
            async move { index.index(std::slice::from_ref(&entry)).await }
        });
        let request_line = answer_one(&listener).await;
        assert!(request_line.starts_with("PUT /_index_template/"), "{request_line}");
        // The fake answers nothing else: the write itself then fails, as unavailable.
        drop(listener);
        let written = write.await.unwrap();
        assert!(written.is_err_and(|e| e.is_transient()));
    }
}
