//! A highly available PostgreSQL cluster through the whole platform, as a tenant uses it:
//! created over the API, switched over over the API (the supervisor the platform runs is told,
//! so no failover is reported), its cluster info and event log following the election, backed
//! up and its backups listed, scaled, made again after every member and the store were
//! removed, and deleted. The image is the local one (`IAAS_TEST_POSTGRES_HA_IMAGE`, built by
//! `scripts/services.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use std::time::Duration;

use sqlx::Connection as _;

use common::{Served, ok};
use iaas_platform::HttpLimits;
use iaas_testkit::wait::eventually;
use serde_json::{Value, json};

#[tokio::test]
async fn a_tenant_creates_switches_over_scales_and_deletes_a_highly_available_cluster() {
    let data_dir = iaas_testkit::isolation::temp_dir("iaas-managed-pg");
    let mut settings = common::embedded(&data_dir);
    if let Ok(image) = std::env::var("IAAS_TEST_POSTGRES_HA_IMAGE") {
        settings.push((iaas_platform::POSTGRES_HA_IMAGE_VAR, image));
    }
    let served = Served::start(common::config(&settings), HttpLimits::default()).await;
    let addr = served.addr.clone();
    let credentials = json!({"username": "ada", "password": "correct horse battery staple"});
    ok(&addr, "POST", "/v1/auth/register", None, &credentials).await;
    let login = ok(&addr, "POST", "/v1/auth/login", None, &credentials).await;
    let token = login["access_token"].as_str().unwrap().to_owned();
    let call = |method: &'static str, path: String, body: Value| {
        let (addr, token) = (addr.clone(), token.clone());
        async move { common::call(&addr, method, &path, Some(&token), &body).await.unwrap() }
    };

    let spec = json!({"kind": "postgres", "database": "ledger", "replicas": 1, "ha": true});
    let (status, created) =
        call("POST", "/v1/instances".into(), json!({"name": "ledger", "spec": spec})).await;
    assert_eq!(status, 202, "{created}");
    assert_eq!(created["instance"]["spec"]["ha"], true, "{created}");
    let id = created["instance"]["id"].as_str().unwrap().to_owned();

    // Running once its endpoint is; the switchover is accepted once the replica streams.
    let answer = eventually(Duration::from_secs(90), || async {
        let (status, body) =
            call("POST", format!("/v1/instances/{id}/switchover"), json!({})).await;
        if status == 200 { Ok(body) } else { Err(format!("{status} {body}")) }
    })
    .await
    .unwrap_or_else(|last| panic!("the switchover was never accepted: {last}"));
    // Whichever member won the first election (usually member-0, created first), the other
    // one leads after the switchover.
    let (old, new) =
        (answer["old_primary"].as_str().unwrap(), answer["new_primary"].as_str().unwrap());
    let mut members = [old, new];
    members.sort_unstable();
    assert_eq!(members, ["member-0", "member-1"], "{answer}");

    let (status, info) = call("GET", format!("/v1/instances/{id}/info"), Value::Null).await;
    assert_eq!(status, 200, "{info}");
    let primary: Vec<&Value> =
        info["nodes"].as_array().unwrap().iter().filter(|n| n["role"] == "primary").collect();
    assert_eq!(primary.len(), 1, "{info}");
    assert!(primary[0]["name"].as_str().unwrap().ends_with(&format!("-{new}")), "{info}");

    // The event log has the switchover, and no failover: the supervisor was told.
    eventually(Duration::from_secs(20), || async {
        let (_, page) =
            call("GET", format!("/v1/events?instance={id}&action=switchover"), Value::Null).await;
        let found = page["entries"].as_array().map_or(0, Vec::len);
        if found == 1 { Ok(()) } else { Err(page) }
    })
    .await
    .unwrap_or_else(|last| panic!("no switchover in the event log: {last}"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, failovers) =
        call("GET", format!("/v1/events?instance={id}&action=failover"), Value::Null).await;
    assert_eq!(failovers["entries"].as_array().map(Vec::len), Some(0), "{failovers}");

    // A backup on the new primary, listed, and in the event log.
    let (status, taken) = call("POST", format!("/v1/instances/{id}/backups"), json!({})).await;
    assert_eq!(status, 201, "{taken}");
    assert_eq!(taken["backup"]["kind"], "full", "{taken}");
    let (status, listed) = call("GET", format!("/v1/instances/{id}/backups"), Value::Null).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["backups"][0]["label"], taken["backup"]["label"], "{listed}");
    assert!(listed["wal_max"].is_string(), "{listed}");
    eventually(Duration::from_secs(20), || async {
        let (_, page) =
            call("GET", format!("/v1/events?instance={id}&action=backed_up"), Value::Null).await;
        if page["entries"].as_array().map_or(0, Vec::len) == 1 { Ok(()) } else { Err(page) }
    })
    .await
    .unwrap_or_else(|last| panic!("no backed_up event in the log: {last}"));

    // One more replica: the count is stored at once, the supervisor adds the member.
    let (status, scaled) =
        call("PATCH", format!("/v1/instances/{id}"), json!({"replicas": 2})).await;
    assert_eq!((status, &scaled["spec"]["replicas"]), (202, &json!(2)), "{scaled}");
    eventually(Duration::from_secs(90), || async {
        let (_, view) = call("GET", format!("/v1/instances/{id}/replication"), Value::Null).await;
        let streaming = view["replicas"]
            .as_array()
            .map_or(0, |r| r.iter().filter(|r| r["state"] == "streaming").count());
        let (_, page) =
            call("GET", format!("/v1/events?instance={id}&action=node_added"), Value::Null).await;
        let added = page["entries"].as_array().map_or(0, Vec::len);
        if streaming == 2 && added == 1 { Ok(()) } else { Err((view, page)) }
    })
    .await
    .unwrap_or_else(|last| panic!("the third member never streamed: {last:?}"));

    // Every member and the store removed at once (as `docker rm -f` does: their volumes
    // stay): the platform makes them again on their data, from the secrets it keeps when no
    // member is left to copy them from, and the rows written before are there.
    let password = created["credentials"]["password"].as_str().unwrap().to_owned();
    let (_, info) = call("GET", format!("/v1/instances/{id}/info"), Value::Null).await;
    let port = info["endpoints"]
        .as_array()
        .and_then(|all| {
            all.iter().find(|e| e["name"].as_str().is_some_and(|n| n.starts_with("5432")))
        })
        .and_then(|e| e["port"].as_u64())
        .unwrap_or_else(|| panic!("no read-write endpoint: {info}"));
    let url = format!("postgres://app:{password}@127.0.0.1:{port}/ledger");
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE kept AS SELECT g FROM generate_series(1, 200) g")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let parts: Vec<String> = ["member-0", "member-1", "member-2", "store"]
        .iter()
        .map(|r| format!("iaas-{id}-{r}"))
        .collect();
    let removed = tokio::process::Command::new("docker")
        .args(["rm", "-f"])
        .args(&parts)
        .output()
        .await
        .unwrap();
    assert!(removed.status.success(), "{}", String::from_utf8_lossy(&removed.stderr));
    let count = eventually(Duration::from_secs(120), || async {
        let mut conn = sqlx::PgConnection::connect(&url).await.map_err(|e| e.to_string())?;
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM kept")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|last| panic!("the cluster never answered again: {last}"));
    assert_eq!(count, 200, "the rows written before the removal");

    let (status, _) = call("DELETE", format!("/v1/instances/{id}?purge=true"), Value::Null).await;
    assert_eq!(status, 202);
    eventually(Duration::from_secs(60), || async {
        let (_, body) = call("GET", format!("/v1/instances/{id}"), Value::Null).await;
        if body["status"] == "deleted" { Ok(()) } else { Err(body["status"].clone()) }
    })
    .await
    .unwrap();
    served.stop().await;
    std::fs::remove_dir_all(&data_dir).unwrap();
}
