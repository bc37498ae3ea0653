//! The Kubernetes manifests among the forward-auth examples (deploy/forward-auth/kubernetes)
//! pass the schema validation the overlays pass; the kinds Kubernetes has no schema for are
//! the ingresses' own (Traefik's Middleware, Istio's), and only those. nginx.conf and the
//! Caddyfile are run by the end-to-end tests beside this one; the node's configuration example
//! is one the node accepts; Envoy's and Traefik's files parse.

use std::path::Path;

use crate::harness::kdc::tool;

/// The custom resources of the examples: kubernetes-validate knows no schema for them.
const CUSTOM_KINDS: [&str; 3] = ["Middleware", "IstioOperator", "AuthorizationPolicy"];

#[tokio::test]
async fn the_kubernetes_examples_pass_strict_schema_validation() {
    let Some(validate) = tool("kubernetes-validate") else {
        let message = "the example check needs kubernetes-validate (python3 -m pip install kubernetes-validate)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        eprintln!("SKIPPED: {message}");
        return;
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/forward-auth/kubernetes");
    let mut manifests: Vec<_> = std::fs::read_dir(&dir)
        .expect("the examples' directory")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    manifests.sort();
    assert!(manifests.len() >= 4, "{manifests:?}");
    for manifest in manifests {
        let output = tokio::process::Command::new(&validate)
            .arg("--strict")
            .arg(&manifest)
            .output()
            .await
            .expect("run kubernetes-validate");
        let report = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{}: {report}", manifest.display());
        for line in report.lines().filter(|line| !line.starts_with("INFO")) {
            assert!(
                line.starts_with("WARN")
                    && line.contains("Couldn't find schema")
                    && CUSTOM_KINDS
                        .iter()
                        .any(|kind| line.contains(&format!("kind {kind} "))),
                "{}: {line}",
                manifest.display()
            );
        }
    }
}

#[test]
fn the_node_configuration_example_is_accepted_by_the_node() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/forward-auth");
    let example = std::fs::read_to_string(dir.join("data-plane.toml")).expect("the example");
    let config = gatehouse_data_plane::Config::from_toml_str(&format!(
        "{example}\n[control_plane]\nshared_secret = \"{}\"\n",
        "0123456789abcdef".repeat(2)
    ))
    .expect("deploy/forward-auth/data-plane.toml is a valid node configuration");
    assert_eq!(
        config.forward_auth.listen.map(|address| address.port()),
        Some(9904)
    );
    assert_eq!(
        config
            .forward_auth
            .grpc_listen
            .map(|address| address.port()),
        Some(9905)
    );
}

/// Envoy's and Traefik's files are not run (neither is installed here): they parse as YAML
/// and ask the ports and path the node serves.
#[tokio::test]
async fn the_envoy_and_traefik_examples_parse_and_ask_the_node() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/forward-auth");
    let parse = "import sys, yaml\nfor path in sys.argv[1:]: yaml.safe_load(open(path))";
    let Some(python) = tool("python3") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "python3 is missing"
        );
        eprintln!("SKIPPED: python3 is missing");
        return;
    };
    let status = tokio::process::Command::new(python)
        .args(["-c", parse])
        .arg(dir.join("envoy.yaml"))
        .arg(dir.join("traefik-dynamic.yaml"))
        .status()
        .await
        .expect("run python3");
    assert!(
        status.success(),
        "the YAML examples parse (python3 with PyYAML)"
    );
    let envoy = std::fs::read_to_string(dir.join("envoy.yaml")).unwrap();
    assert!(envoy.contains("envoy.filters.http.ext_authz") && envoy.contains("port_value: 9905"));
    let traefik = std::fs::read_to_string(dir.join("traefik-dynamic.yaml")).unwrap();
    assert!(traefik.contains(":9904/auth?redirect=true"));
}
