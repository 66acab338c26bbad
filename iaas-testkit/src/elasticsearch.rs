use crate::service::env_var;

/// Names a running Elasticsearch (`http://127.0.0.1:9200`); live tests run only when it is set.
pub const ELASTICSEARCH_URL_VAR: &str = "IAAS_TEST_ELASTICSEARCH_URL";

/// The Elasticsearch endpoint for live tests, or `None` after printing why they are skipped.
///
/// Unlike the other services, none is started: no Elasticsearch image can be had where this
/// suite usually runs, and the adapter's contract tests cover the request and response shapes.
pub fn elasticsearch(test: &str) -> Option<String> {
    let url = env_var(ELASTICSEARCH_URL_VAR);
    if url.is_none() {
        eprintln!("skipping live Elasticsearch test {test}: {ELASTICSEARCH_URL_VAR} is not set");
    }
    url
}
