//! The log index in Elasticsearch, through the official client.
//!
//! - Writes are `_bulk` `create` operations with `_id` = event id: a redelivered event answers
//!   409 (`version_conflict_engine_exception`) for its item, which means "already indexed" and is
//!   success. Each item is judged on its own: 429 and 5xx are transient (the whole batch is
//!   retried, which the ids make safe), any other 4xx (a mapping error) rejects the entry for
//!   good.
//! - Searches are a `bool` query: `term` filters (the user always among them), a `range` on
//!   `timestamp`, `simple_query_string` over `message` and `metadata_text` for the words, and
//!   `search_after` on the `(timestamp, event_id)` sort for the cursor.
//! - Counts are a `date_histogram` on `timestamp` with `terms` sub-aggregations on `action` and
//!   `type`.
//! - [`ElasticsearchLogIndex::ensure_template`] installs an index template with explicit mappings
//!   (keywords for ids and filters, `date_nanos` for the timestamp, `flattened` metadata), so no
//!   dynamic mapping ever guesses a field type.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use elasticsearch::http::Url;
use elasticsearch::http::headers::{CONTENT_TYPE, HeaderValue};
use elasticsearch::http::request::JsonBody;
use elasticsearch::http::response::Response;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::indices::IndicesPutIndexTemplateParts;
use elasticsearch::params::Refresh;
use elasticsearch::{BulkParts, Elasticsearch, SearchParts};
use iaas_core::{redact_url, redact_urls_in};
use serde_json::{Value, json};

use super::LogIndex;
use super::entry::LogEntry;
use super::error::IndexError;
use super::query::{CountBucket, CountQuery, Counts, LogPage, LogQuery};

const BACKEND: &str = "elasticsearch";

/// Where and how to reach Elasticsearch. `Debug` leaves the URL's credentials out.
#[derive(Clone)]
#[non_exhaustive]
pub struct ElasticsearchConfig {
    /// The node URL (`http://127.0.0.1:9200`).
    pub url: String,
    /// The index written and searched; the template matches `{index}*`.
    pub index: String,
    /// Timeout of every request.
    pub timeout: Duration,
    /// Make each bulk write visible to searches before it returns (`refresh=wait_for`). Costs
    /// throughput; for tests and read-your-writes APIs.
    pub refresh_on_write: bool,
}

impl ElasticsearchConfig {
    /// Defaults for `url`: index `iaas-logs`, 10 s timeout, no refresh on write.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            index: "iaas-logs".to_owned(),
            timeout: Duration::from_secs(10),
            refresh_on_write: false,
        }
    }
}

/// The [`LogIndex`] backed by Elasticsearch.
#[derive(Debug, Clone)]
pub struct ElasticsearchLogIndex {
    client: Elasticsearch,
    config: ElasticsearchConfig,
}

/// Most `by_action` terms returned per bucket: the known actions plus room for new ones.
const MAX_ACTION_TERMS: u32 = 64;
/// Most `type` terms per bucket (there are four kinds today).
const MAX_TYPE_TERMS: u32 = 16;

impl std::fmt::Debug for ElasticsearchConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElasticsearchConfig")
            .field("url", &redact_url(&self.url))
            .field("index", &self.index)
            .field("timeout", &self.timeout)
            .field("refresh_on_write", &self.refresh_on_write)
            .finish()
    }
}

impl ElasticsearchLogIndex {
    /// A client for `config.url`; nothing is sent until the first call.
    pub fn new(config: ElasticsearchConfig) -> Result<Self, IndexError> {
        let invalid = |reason: String| IndexError::InvalidConfig { key: "url", reason };
        let url = Url::parse(&config.url)
            .map_err(|e| invalid(format!("{:?} is not a URL: {e}", redact_url(&config.url))))?;
        let transport = TransportBuilder::new(SingleNodeConnectionPool::new(url))
            .timeout(config.timeout)
            .disable_proxy()
            .build()
            .map_err(|e| {
                invalid(format!("cannot build a client for {}: {e}", redact_url(&config.url)))
            })?;
        Ok(Self { client: Elasticsearch::new(transport), config })
    }

    /// The index template name (`{index}-template`).
    pub fn template_name(&self) -> String {
        format!("{}-template", self.config.index)
    }

    /// The body of the index template: explicit mappings, `dynamic: strict` so a document with
    /// an unexpected field is rejected instead of mapped by guess.
    pub fn template_body(&self) -> Value {
        json!({
            "index_patterns": [format!("{}*", self.config.index)],
            "template": {
                "mappings": {
                    "dynamic": "strict",
                    "properties": {
                        "event_id": { "type": "keyword" },
                        "instance_id": { "type": "keyword" },
                        "user_id": { "type": "keyword" },
                        "type": { "type": "keyword" },
                        "action": { "type": "keyword" },
                        "level": { "type": "keyword" },
                        "message": { "type": "text" },
                        "metadata": { "type": "flattened" },
                        "metadata_text": { "type": "text" },
                        "timestamp": { "type": "date_nanos" }
                    }
                }
            }
        })
    }

    /// Creates or updates the index template; call before the first write.
    pub async fn ensure_template(&self) -> Result<(), IndexError> {
        let operation = format!("putting index template {}", self.template_name());
        let response = self
            .client
            .indices()
            .put_index_template(IndicesPutIndexTemplateParts::Name(&self.template_name()))
            .body(self.template_body())
            .send()
            .await
            .map_err(|e| unavailable(&operation, e))?;
        let body = checked_json(response, &operation).await?;
        if body.get("acknowledged").and_then(Value::as_bool) == Some(true) {
            Ok(())
        } else {
            Err(internal(&operation, format!("template not acknowledged: {body}")))
        }
    }

    fn document(entry: &LogEntry) -> Result<Value, IndexError> {
        let mut doc = serde_json::to_value(entry).map_err(|e| {
            internal("encoding a log entry", format!("event {}: {e}", entry.event_id))
        })?;
        if let Value::Object(fields) = &mut doc {
            fields.insert("metadata_text".to_owned(), Value::String(entry.metadata_text()));
        }
        Ok(doc)
    }

    fn filters(user: &str, from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Vec<Value> {
        let mut filters = vec![json!({ "term": { "user_id": user } })];
        let mut range = serde_json::Map::new();
        if let Some(from) = from {
            range.insert("gte".to_owned(), json!(rfc3339(from)));
        }
        if let Some(to) = to {
            range.insert("lt".to_owned(), json!(rfc3339(to)));
        }
        if !range.is_empty() {
            filters.push(json!({ "range": { "timestamp": range } }));
        }
        filters
    }

    /// The search request body for `query` (public so its shape can be checked in tests).
    pub fn search_body(query: &LogQuery) -> Value {
        let mut filters = Self::filters(&query.user.to_string(), query.from, query.to);
        if let Some(instance) = query.instance {
            filters.push(json!({ "term": { "instance_id": instance.to_string() } }));
        }
        if let Some(kind) = query.kind {
            filters.push(json!({ "term": { "type": kind.as_str() } }));
        }
        if let Some(action) = &query.action {
            filters.push(json!({ "term": { "action": action.as_str() } }));
        }
        let mut bool_query = json!({ "filter": filters });
        let words = query.words();
        if !words.is_empty() {
            bool_query["must"] = json!([{
                "simple_query_string": {
                    "query": words.join(" "),
                    "fields": ["message", "metadata_text"],
                    "default_operator": "and"
                }
            }]);
        }
        let mut body = json!({
            "size": query.limit + 1,
            "track_total_hits": false,
            "query": { "bool": bool_query },
            "sort": [ { "timestamp": "desc" }, { "event_id": "desc" } ]
        });
        if let Some(cursor) = query.cursor {
            // date_nanos sort values are nanoseconds since the epoch; entries keep microseconds.
            body["search_after"] = json!([
                cursor.timestamp_micros().saturating_mul(1000),
                cursor.event_id.to_string()
            ]);
        }
        body
    }

    /// The counts request body for `query` with `seconds`-wide buckets.
    pub fn counts_body(query: &CountQuery, seconds: u64) -> Value {
        json!({
            "size": 0,
            "query": { "bool": {
                "filter": Self::filters(&query.user.to_string(), Some(query.from), Some(query.to))
            } },
            "aggs": { "buckets": {
                "date_histogram": {
                    "field": "timestamp",
                    "fixed_interval": format!("{seconds}s"),
                    "min_doc_count": 1
                },
                "aggs": {
                    "by_action": { "terms": { "field": "action", "size": MAX_ACTION_TERMS } },
                    "by_type": { "terms": { "field": "type", "size": MAX_TYPE_TERMS } }
                }
            } }
        })
    }
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// The client's error names the URL it called, credentials included: they are taken out.
fn unavailable(operation: &str, source: elasticsearch::Error) -> IndexError {
    IndexError::Unavailable {
        backend: BACKEND,
        operation: operation.to_owned(),
        source: redact_urls_in(&iaas_core::error_chain(&source)).into(),
    }
}

fn internal(operation: &str, reason: String) -> IndexError {
    IndexError::Internal { backend: BACKEND, operation: operation.to_owned(), reason }
}

/// Whether Elasticsearch answering `status` may do better later.
fn is_retryable(status: u16) -> bool {
    status == 429 || status >= 500
}

/// The JSON body of a successful response; an error status becomes the matching error.
async fn checked_json(response: Response, operation: &str) -> Result<Value, IndexError> {
    let status = response.status_code().as_u16();
    let body: Value = response.json().await.map_err(|e| unavailable(operation, e))?;
    if (200..300).contains(&status) {
        return Ok(body);
    }
    let reason = format!("HTTP {status}: {}", body.get("error").unwrap_or(&body));
    if is_retryable(status) {
        Err(IndexError::Unavailable {
            backend: BACKEND,
            operation: operation.to_owned(),
            source: reason.into(),
        })
    } else {
        Err(internal(operation, reason))
    }
}

/// Judges the items of a bulk response (documented shape: `{"errors": bool, "items": [{"create":
/// {"_id", "status", "error": {"type", "reason"}}}]}`).
fn check_bulk_items(body: &Value, entries: &[LogEntry], operation: &str) -> Result<(), IndexError> {
    if body.get("errors").and_then(Value::as_bool) != Some(true) {
        return Ok(());
    }
    let items = body
        .get("items")
        .and_then(Value::as_array)
        .ok_or_else(|| internal(operation, "bulk response with errors but no items".to_owned()))?;
    let mut retryable = Vec::new();
    let mut rejected = None;
    for (position, item) in items.iter().enumerate() {
        let Some(result) = item.as_object().and_then(|ops| ops.values().next()) else {
            return Err(internal(operation, format!("bulk item {position} is not an object")));
        };
        let status = result.get("status").and_then(Value::as_u64).unwrap_or(0);
        // 409 on `create`: the document exists, the event was indexed before.
        if (200..300).contains(&status) || status == 409 {
            continue;
        }
        let id = result.get("_id").and_then(Value::as_str).unwrap_or("?");
        let reason = result
            .get("error")
            .map(|e| {
                let kind = e.get("type").and_then(Value::as_str).unwrap_or("error");
                let why = e.get("reason").and_then(Value::as_str).unwrap_or("");
                format!("{kind}: {why}")
            })
            .unwrap_or_else(|| format!("HTTP {status}"));
        if is_retryable(u16::try_from(status).unwrap_or(u16::MAX)) {
            retryable.push(format!("{id} ({status} {reason})"));
        } else if rejected.is_none() {
            let event_id = entries
                .get(position)
                .map(|e| e.event_id)
                .ok_or_else(|| internal(operation, format!("bulk item {position} has no entry")))?;
            rejected = Some(IndexError::Rejected { backend: BACKEND, event_id, reason });
        }
    }
    // A transient item wins over a rejected one: retrying the batch is safe (ids), and dead-
    // lettering it would lose the entries that only needed a retry.
    if !retryable.is_empty() {
        return Err(IndexError::Unavailable {
            backend: BACKEND,
            operation: operation.to_owned(),
            source: format!("items to retry: {}", retryable.join(", ")).into(),
        });
    }
    rejected.map_or(Ok(()), Err)
}

fn count_terms(bucket: &Value, name: &str) -> BTreeMap<String, u64> {
    bucket
        .get(name)
        .and_then(|agg| agg.get("buckets"))
        .and_then(Value::as_array)
        .map(|terms| {
            terms
                .iter()
                .filter_map(|t| {
                    Some((t.get("key")?.as_str()?.to_owned(), t.get("doc_count")?.as_u64()?))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[async_trait]
impl LogIndex for ElasticsearchLogIndex {
    async fn index(&self, entries: &[LogEntry]) -> Result<(), IndexError> {
        if entries.is_empty() {
            return Ok(());
        }
        let operation = format!("bulk indexing {} log entries", entries.len());
        let mut lines: Vec<JsonBody<Value>> = Vec::with_capacity(entries.len() * 2);
        for entry in entries {
            lines.push(json!({ "create": { "_id": entry.event_id.to_string() } }).into());
            lines.push(Self::document(entry)?.into());
        }
        // The client's default content type is `application/json`; the bulk API documents
        // `application/x-ndjson`, which is what the body is.
        let mut request = self
            .client
            .bulk(BulkParts::Index(&self.config.index))
            .header(CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"))
            .body(lines);
        if self.config.refresh_on_write {
            request = request.refresh(Refresh::WaitFor);
        }
        let response = request.send().await.map_err(|e| unavailable(&operation, e))?;
        let body = checked_json(response, &operation).await?;
        check_bulk_items(&body, entries, &operation)
    }

    async fn search(&self, query: &LogQuery) -> Result<LogPage, IndexError> {
        query.validate()?;
        let operation = format!("searching the log entries of {}", query.user);
        let response = self
            .client
            .search(SearchParts::Index(&[&self.config.index]))
            .body(Self::search_body(query))
            .send()
            .await
            .map_err(|e| unavailable(&operation, e))?;
        let body = checked_json(response, &operation).await?;
        let hits = body
            .pointer("/hits/hits")
            .and_then(Value::as_array)
            .ok_or_else(|| internal(&operation, "response without hits.hits".to_owned()))?;
        let entries = hits
            .iter()
            .map(|hit| {
                let source = hit.get("_source").cloned().unwrap_or(Value::Null);
                serde_json::from_value::<LogEntry>(source)
                    .map_err(|e| internal(&operation, format!("unreadable _source: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(LogPage::from_fetched(entries, query.limit))
    }

    async fn counts(&self, query: &CountQuery) -> Result<Counts, IndexError> {
        let seconds = query.validate()?;
        let operation = format!("counting the log entries of {}", query.user);
        let response = self
            .client
            .search(SearchParts::Index(&[&self.config.index]))
            .body(Self::counts_body(query, seconds))
            .send()
            .await
            .map_err(|e| unavailable(&operation, e))?;
        let body = checked_json(response, &operation).await?;
        let buckets = body
            .pointer("/aggregations/buckets/buckets")
            .and_then(Value::as_array)
            .ok_or_else(|| internal(&operation, "response without the histogram".to_owned()))?;
        let mut counts = Counts::default();
        for bucket in buckets {
            let key = bucket.get("key").and_then(Value::as_i64);
            let total = bucket.get("doc_count").and_then(Value::as_u64);
            let (Some(key), Some(total)) = (key, total) else {
                return Err(internal(&operation, format!("histogram bucket {bucket}")));
            };
            if total == 0 {
                continue;
            }
            let start = DateTime::from_timestamp_millis(key)
                .ok_or_else(|| internal(&operation, format!("bucket key {key} out of range")))?;
            counts.buckets.push(CountBucket {
                start,
                total,
                by_action: count_terms(bucket, "by_action"),
                by_type: count_terms(bucket, "by_type"),
            });
        }
        Ok(counts)
    }
}
