//! The binary's configuration surface: `--help` lists every setting, and a bad file stops the
//! start with exit code 2 and a message naming the key, the value and the file.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

use std::path::PathBuf;
use std::process::Output;

use tokio::process::Command;

/// A fresh directory holding `platform.toml` with `text`.
fn config_file(text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(iaas_testkit::isolation::unique_name("iaas-config-bin"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("platform.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the binary with `args`, the test's data directory and no inherited IAAS_* settings.
async fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let data_dir =
        std::env::temp_dir().join(iaas_testkit::isolation::unique_name("iaas-config-data"));
    let mut command = Command::new(env!("CARGO_BIN_EXE_iaas-platform"));
    for setting in iaas_platform::SETTINGS {
        command.env_remove(setting.env);
    }
    command
        .env_remove(iaas_platform::CONFIG_VAR)
        .env(iaas_platform::DATA_DIR_VAR, &data_dir)
        .env("NO_COLOR", "1")
        .args(args)
        .envs(envs.iter().copied())
        .kill_on_drop(true);
    // A configuration that is accepted would start serving: never wait on that.
    tokio::time::timeout(std::time::Duration::from_secs(30), command.output())
        .await
        .expect("a rejected configuration exits at once")
        .unwrap()
}

#[tokio::test]
async fn help_lists_every_key_with_its_variable_and_default() {
    let output = run(&["--help"], &[]).await;
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for setting in iaas_platform::SETTINGS {
        assert!(help.contains(setting.key), "{} missing:\n{help}", setting.key);
        assert!(help.contains(setting.env), "{} missing:\n{help}", setting.env);
        assert!(help.contains(setting.default), "default of {} missing", setting.key);
    }
    assert!(help.contains("--config"));
}

#[tokio::test]
async fn an_unknown_file_key_exits_2_naming_it() {
    let path = config_file("listen = \"127.0.0.1:0\"\nlisten_port = 8080\n");
    let output = run(&["--config", path.to_str().unwrap()], &[]).await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown key \"listen_port\""), "{stderr}");
    assert!(stderr.contains(path.to_str().unwrap()), "{stderr}");
}

#[tokio::test]
async fn a_bad_file_value_exits_2_naming_key_value_and_file() {
    let path = config_file("kafka_brokers = \"broker-without-port\"\n");
    let output = run(&[], &[(iaas_platform::CONFIG_VAR, path.to_str().unwrap())]).await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("kafka_brokers=\"broker-without-port\""), "{stderr}");
    assert!(stderr.contains(path.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("host:port"), "the reason is given: {stderr}");
}

#[tokio::test]
async fn the_environment_is_checked_over_the_file_and_named() {
    let path = config_file("elasticsearch_url = \"http://127.0.0.1:9200\"\n");
    let output = run(
        &["--config", path.to_str().unwrap()],
        &[(iaas_platform::ELASTICSEARCH_URL_VAR, "127.0.0.1:9200")],
    )
    .await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("IAAS_ELASTICSEARCH_URL=\"127.0.0.1:9200\""), "{stderr}");
    assert!(stderr.contains("from the environment"), "{stderr}");
}

#[tokio::test]
async fn a_missing_file_and_an_unknown_argument_exit_2() {
    let output = run(&["--config", "/nonexistent/platform.toml"], &[]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/platform.toml"));
    let output = run(&["--port", "80"], &[]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("\"--port\""));
}

#[test]
fn the_configuration_reference_documents_every_setting() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md"))
            .unwrap();
    for setting in iaas_platform::SETTINGS {
        let row = doc
            .lines()
            .find(|line| line.starts_with(&format!("| `{}` |", setting.key)))
            .unwrap_or_else(|| panic!("docs/configuration.md has no row for {}", setting.key));
        assert!(row.contains(&format!("`{}`", setting.env)), "{row}");
        let default = if setting.default.starts_with("unset") { "unset" } else { setting.default };
        assert!(row.contains(default), "default of {} missing: {row}", setting.key);
        assert!(
            doc.contains(&format!("\n{} = ", setting.key)),
            "the example file sets {}",
            setting.key
        );
    }
}

#[test]
fn the_configuration_reference_documents_no_setting_that_is_not_declared() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md"))
            .unwrap();
    let table = doc.split("## Settings\n").nth(1).unwrap().split("\n## ").next().unwrap();
    let rows: Vec<&str> = table.lines().filter(|line| line.starts_with("| `")).collect();
    for row in &rows {
        let key = row.split('`').nth(1).unwrap();
        assert!(
            iaas_platform::Setting::by_key(key).is_some(),
            "docs/configuration.md documents {key}, which is not a setting"
        );
    }
    assert_eq!(rows.len(), iaas_platform::SETTINGS.len(), "one row per setting");
}

#[test]
fn the_example_file_in_the_reference_is_accepted() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md"))
            .unwrap();
    let example = doc.split("```toml\n").nth(1).unwrap().split("```").next().unwrap();
    let path = config_file(example);
    let config = iaas_platform::Config::load(Some(&path), |_| None).unwrap();
    assert_eq!(config.kafka_brokers.as_deref(), Some("kafka-1:9092,kafka-2:9092,kafka-3:9092"));
    assert_eq!(config.elasticsearch_url.as_deref(), Some("http://search.internal:9200"));
}
