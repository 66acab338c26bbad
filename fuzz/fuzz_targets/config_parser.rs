//! The platform configuration parser on an arbitrary TOML file and environment: it never
//! panics, and every refusal names what is at fault (a known setting, its file key or
//! environment variable, or the file).
//!
//! Input layout: the TOML text, then optionally a NUL byte and `NAME=value` lines that form the
//! environment (`IAAS_CONFIG` excluded, so the target never reads files other than its own).

#![no_main]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use iaas_platform::{CONFIG_VAR, Config, ConfigError, SETTINGS};
use libfuzzer_sys::fuzz_target;

fn file_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("iaas-fuzz-config-{}.toml", std::process::id()))
    })
}

fn is_setting(name: &str) -> bool {
    SETTINGS.iter().any(|s| s.key == name || s.env == name)
}

fuzz_target!(|bytes: &[u8]| {
    let (file, env) = match bytes.iter().position(|b| *b == 0) {
        Some(at) => (&bytes[..at], &bytes[at + 1..]),
        None => (bytes, &[][..]),
    };
    let env: HashMap<String, String> = String::from_utf8_lossy(env)
        .lines()
        .filter_map(|line| line.split_once('='))
        .filter(|(name, _)| *name != CONFIG_VAR)
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    let path = file_path();
    std::fs::write(path, file).expect("the fuzz config file is writable");
    let Err(err) = Config::load(Some(path), |key| env.get(key).cloned()) else {
        return;
    };
    let message = err.to_string();
    match &err {
        ConfigError::Invalid { key, .. } | ConfigError::WrongType { key, .. } => {
            assert!(is_setting(key), "refusal names no setting: {key:?} in {message}");
            assert!(message.contains(key.as_str()), "message hides the key: {message}");
        }
        // Quoted as Rust writes strings, so a key of any characters reads unambiguously.
        ConfigError::UnknownKey { key, .. } => {
            assert!(message.contains(&format!("{key:?}")), "message hides the key: {message}");
        }
        ConfigError::Syntax { path: named, .. } | ConfigError::Unreadable { path: named, .. } => {
            assert!(message.contains(named.as_str()), "message hides the file: {message}");
        }
        other => panic!("a file and environment gave an unexpected error: {other}"),
    }
});
