//! The `CacheStore` contract, run against the in-process store and real Redis alike.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

mod common;

use std::time::Duration;

use common::Harness;

on_every_backend!(
    a_value_lives_for_its_ttl_and_no_longer,
    batches_larger_than_one_command_keep_their_order,
    a_fill_writes_only_under_the_generation_it_read,
);

async fn a_value_lives_for_its_ttl_and_no_longer(h: Harness) {
    let short = h.key("short");
    let long = h.key("long");
    h.store.set(&short, b"soon gone", Duration::from_millis(300)).await.unwrap();
    h.store.set(&long, b"stays", Duration::from_secs(60)).await.unwrap();
    assert_eq!(h.store.get(&short).await.unwrap(), Some(b"soon gone".to_vec()));

    h.let_expire(&short, Duration::from_millis(300)).await;

    assert_eq!(h.store.get(&short).await.unwrap(), None);
    assert_eq!(h.store.get(&long).await.unwrap(), Some(b"stays".to_vec()));
    h.store.delete_many(&[long]).await.unwrap();
}

async fn batches_larger_than_one_command_keep_their_order(h: Harness) {
    // 1,100 keys: three MGET / DEL commands of at most 512 keys in one pipeline.
    let keys: Vec<String> = (0..1_100).map(|i| h.key(&format!("k{i}"))).collect();
    for (i, key) in keys.iter().enumerate() {
        if i % 100 != 7 {
            h.store.set(key, i.to_string().as_bytes(), Duration::from_secs(60)).await.unwrap();
        }
    }
    let values = h.store.get_many(&keys).await.unwrap();
    assert_eq!(values.len(), keys.len());
    for (i, value) in values.iter().enumerate() {
        let expected = (i % 100 != 7).then(|| i.to_string().into_bytes());
        assert_eq!(value, &expected, "key {i}");
    }

    assert_eq!(h.store.delete_many(&keys).await.unwrap(), 1_089);
    assert!(h.store.get_many(&keys).await.unwrap().iter().all(Option::is_none));
    assert!(h.store.get_many(&[]).await.unwrap().is_empty());
}

async fn a_fill_writes_only_under_the_generation_it_read(h: Harness) {
    let key = h.key("cluster:info:x");
    let generation = h.key("cluster:gen:x");
    let ttl = Duration::from_secs(60);

    assert_eq!(h.store.get_with_generation(&key, &generation).await.unwrap(), (None, None));
    assert!(h.store.set_if_generation(&key, b"v1", ttl, &generation, None).await.unwrap());
    assert_eq!(h.store.get(&key).await.unwrap(), Some(b"v1".to_vec()));

    h.store.invalidate(std::slice::from_ref(&key), &generation, ttl).await.unwrap();
    assert_eq!(h.store.get_with_generation(&key, &generation).await.unwrap(), (None, Some(1)));

    // A fill that read "no generation" before the invalidation must not write.
    assert!(!h.store.set_if_generation(&key, b"stale", ttl, &generation, None).await.unwrap());
    assert_eq!(h.store.get(&key).await.unwrap(), None);
    // One that read the current generation does.
    assert!(h.store.set_if_generation(&key, b"v2", ttl, &generation, Some(1)).await.unwrap());
    assert_eq!(
        h.store.get_with_generation(&key, &generation).await.unwrap(),
        (Some(b"v2".to_vec()), Some(1))
    );
    h.store.invalidate(&[key], &generation, ttl).await.unwrap();
    h.store.delete_many(&[generation]).await.unwrap();
}
