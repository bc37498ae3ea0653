//! The `control-plane` binary as an operator meets it: bad configuration is one clear line
//! and exit code 64; `--check-config` validates without serving.

// Test helpers: a failure to run the binary is the test failing.
#![allow(clippy::expect_used)]

use std::process::{Command, Output};

fn control_plane(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_control-plane"));
    command.args(args).env_remove("GATEHOUSE_CONFIG");
    for (name, value) in envs {
        command.env(name, value);
    }
    command.output().expect("run control-plane")
}

fn config_file(name: &str, text: &str) -> std::path::PathBuf {
    let path =
        std::env::temp_dir().join(format!("gatehouse-cli-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).expect("write config");
    path
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn invalid_configuration_exits_64_with_one_line() {
    let path = config_file("invalid", "[[virtual_proxies]]\nprefix = \"Sales\"\n");
    let output = control_plane(&["--config", path.to_str().unwrap(), "--check-config"], &[]);
    assert_eq!(output.status.code(), Some(64));
    let message = stderr(&output);
    assert_eq!(message.trim().lines().count(), 1, "{message}");
    assert!(message.contains("lowercase"), "{message}");
}

#[test]
fn unparsable_or_missing_files_exit_64() {
    let path = config_file("unparsable", "listen = \n");
    let output = control_plane(&["--config", path.to_str().unwrap()], &[]);
    assert_eq!(output.status.code(), Some(64));
    assert!(stderr(&output).contains("line 1"), "{}", stderr(&output));

    let output = control_plane(&["--config", "/nonexistent/gatehouse.toml"], &[]);
    assert_eq!(output.status.code(), Some(64));
    assert!(stderr(&output).contains("cannot read"));
}

#[test]
fn environment_overrides_are_validated_too() {
    let output = control_plane(
        &["--check-config"],
        &[
            ("GATEHOUSE_STORE", "redis"),
            ("GATEHOUSE_REDIS_URL", "http://not-redis"),
        ],
    );
    assert_eq!(output.status.code(), Some(64), "{}", stderr(&output));
    assert!(stderr(&output).contains("redis_url"));
    assert!(
        !stderr(&output).contains("not-redis"),
        "URLs may hold passwords: never echoed"
    );
}

#[test]
fn a_valid_configuration_checks_clean() {
    let path = config_file(
        "valid",
        "[[virtual_proxies]]\nprefix = \"\"\n[[virtual_proxies]]\nprefix = \"sales\"\nsession_cap_policy = \"evict-oldest\"\n",
    );
    let output = control_plane(&["--config", path.to_str().unwrap(), "--check-config"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

#[test]
fn any_setting_comes_from_the_environment_or_the_command_line() {
    let bad_env = control_plane(
        &["--check-config"],
        &[("GATEHOUSE__STORE__KEY_PREFIX", "bad prefix!")],
    );
    assert_eq!(bad_env.status.code(), Some(64));
    assert!(
        stderr(&bad_env).contains("key_prefix"),
        "{}",
        stderr(&bad_env)
    );
    let bad_flag = control_plane(&["--check-config", "--set", "tickets.ticket_ttl=soon"], &[]);
    assert_eq!(bad_flag.status.code(), Some(64));
    // --set wins over the environment.
    let fixed = control_plane(
        &["--check-config", "--set", "store.key_prefix=fine"],
        &[("GATEHOUSE__STORE__KEY_PREFIX", "bad prefix!")],
    );
    assert_eq!(fixed.status.code(), Some(0), "{}", stderr(&fixed));
}
