//! The `data-plane` binary as an operator meets it: bad configuration is one clear line and
//! exit code 64; `--check-config` validates without serving.

// Test helpers: a failure to run the binary is the test failing.
#![allow(clippy::expect_used)]

use std::process::{Command, Output};

fn data_plane(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_data-plane"));
    command
        .args(args)
        .env_remove("GATEHOUSE_CONFIG")
        .env_remove("GATEHOUSE_NODE_SECRET");
    for (name, value) in envs {
        command.env(name, value);
    }
    command.output().expect("run data-plane")
}

const SECRET: &str = "0123456789abcdef0123456789abcdef";

#[test]
fn a_missing_secret_exits_64_with_one_line() {
    let output = data_plane(&["--check-config"], &[]);
    assert_eq!(output.status.code(), Some(64));
    let message = String::from_utf8_lossy(&output.stderr);
    assert_eq!(message.trim().lines().count(), 1, "{message}");
    assert!(message.contains("node secret"), "{message}");
}

#[test]
fn bad_endpoints_exit_64_and_never_echo_the_secret() {
    let output = data_plane(
        &["--check-config", "--control-plane", "not a url"],
        &[("GATEHOUSE_NODE_SECRET", SECRET)],
    );
    assert_eq!(output.status.code(), Some(64));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("endpoint"), "{message}");
    assert!(!message.contains(SECRET));
}

#[test]
fn a_valid_configuration_checks_clean() {
    let output = data_plane(&["--check-config"], &[("GATEHOUSE_NODE_SECRET", SECRET)]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
