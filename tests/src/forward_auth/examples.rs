//! The Kubernetes manifests among the forward-auth examples (deploy/forward-auth/kubernetes)
//! pass the schema validation the overlays pass; the kinds Kubernetes has no schema for are
//! the ingresses' own (Traefik's Middleware, Istio's), and only those. nginx.conf and the
//! Caddyfile are run by the end-to-end tests beside this one.

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
