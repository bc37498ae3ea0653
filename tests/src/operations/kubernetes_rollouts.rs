//! What an edit of a Kubernetes overlay's configuration rolls once `kubectl apply -k` applies
//! it. A change to the virtual proxies in control-plane.toml leaves every Deployment as it
//! was: its ConfigMap keeps its name, and the control plane rereads the mounted file when the
//! kubelet updates it (`config_reload`). A change to data-plane.toml, which the nodes read only
//! at start, renames its ConfigMap (a content hash) and so changes the nodes' Deployment
//! alone: they roll. Each overlay is rendered with `kubectl kustomize` from a copy of
//! deploy/kubernetes, before and after each edit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::harness::kdc::tool;

/// A virtual proxy more, as an operator adds one.
const ADDED_PROXY: &str = "\n[[virtual_proxies]]\nprefix = \"added\"\n[virtual_proxies.upstream]\nnodes = [\"engine:4747\"]\n";

/// `dir` copied under `to`, recursively.
fn copy_tree(dir: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Every file named `name` under `dir`.
fn files_named(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_named(&path, name));
        } else if path.file_name().is_some_and(|file| file == name) {
            found.push(path);
        }
    }
    found
}

/// Every file named `name` under `dir` rewritten by `edit`, which must change it.
fn edit_every(dir: &Path, name: &str, edit: impl Fn(&str) -> String) {
    let files = files_named(dir, name);
    assert!(!files.is_empty(), "no {name} under {}", dir.display());
    for file in files {
        let contents = std::fs::read_to_string(&file).unwrap();
        let edited = edit(&contents);
        assert_ne!(edited, contents, "the edit changes {}", file.display());
        std::fs::write(&file, edited).unwrap();
    }
}

/// The documents of `overlay`'s render by (kind, name), each as kustomize prints it.
fn render(kubectl: &Path, overlay: &Path) -> BTreeMap<(String, String), String> {
    let output = std::process::Command::new(kubectl)
        .arg("kustomize")
        .arg(overlay)
        .output()
        .expect("run kubectl kustomize");
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{}: {}",
        overlay.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    text.split("\n---\n")
        .map(|document| ((kind(document), name(document)), document.to_owned()))
        .collect()
}

fn kind(document: &str) -> String {
    document
        .lines()
        .find_map(|line| line.strip_prefix("kind: "))
        .expect("a document has a kind")
        .to_owned()
}

/// `metadata.name`: the first `name:` indented once under the top-level `metadata:`.
fn name(document: &str) -> String {
    document
        .lines()
        .skip_while(|line| *line != "metadata:")
        .skip(1)
        .take_while(|line| line.starts_with(' '))
        .find_map(|line| line.strip_prefix("  name: "))
        .expect("a document has a name")
        .to_owned()
}

/// The documents of `kind` whose text differs between two renders (or is in one only).
fn changed(
    before: &BTreeMap<(String, String), String>,
    after: &BTreeMap<(String, String), String>,
    kind: &str,
) -> Vec<String> {
    let names: std::collections::BTreeSet<_> = before.keys().chain(after.keys()).collect();
    names
        .into_iter()
        .filter(|(of, _)| of == kind)
        .filter(|key| before.get(*key) != after.get(*key))
        .map(|(_, name)| name.clone())
        .collect()
}

#[test]
fn a_virtual_proxy_edit_rolls_no_pod_and_a_node_setting_edit_rolls_only_the_nodes() {
    let Some(kubectl) = tool("kubectl") else {
        let message = "the overlay rollout check needs kubectl (for kustomize)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        eprintln!("SKIPPED: {message}");
        return;
    };
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes");
    let mut overlays: Vec<_> = std::fs::read_dir(shipped.join("overlays"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    overlays.sort();
    assert!(overlays.len() >= 2, "{overlays:?}");
    for overlay in overlays {
        let copy = tempfile::tempdir().unwrap();
        copy_tree(&shipped, copy.path());
        let path = copy.path().join("overlays").join(&overlay);
        let shipped_render = render(&kubectl, &path);

        edit_every(copy.path(), "control-plane.toml", |text| {
            text.to_owned() + ADDED_PROXY
        });
        let proxy_added = render(&kubectl, &path);
        assert_eq!(
            changed(&shipped_render, &proxy_added, "ConfigMap"),
            ["control-plane-config"],
            "{overlay:?}: the virtual proxy lands in the control plane's ConfigMap, same name"
        );
        assert_eq!(
            changed(&shipped_render, &proxy_added, "Deployment"),
            Vec::<String>::new(),
            "{overlay:?}: a virtual-proxy edit changes no Deployment, so no pod rolls"
        );

        edit_every(copy.path(), "data-plane.toml", |text| {
            text.replacen("shutdown_grace = \"25s\"", "shutdown_grace = \"20s\"", 1)
        });
        let node_changed = render(&kubectl, &path);
        assert_eq!(
            changed(&proxy_added, &node_changed, "Deployment"),
            ["data-plane"],
            "{overlay:?}: a data-plane.toml edit changes the nodes' Deployment alone"
        );
        let renamed = changed(&proxy_added, &node_changed, "ConfigMap");
        assert_eq!(renamed.len(), 2, "{overlay:?}: {renamed:?}");
        assert!(
            renamed
                .iter()
                .all(|name| name.starts_with("data-plane-config-")),
            "{overlay:?}: the nodes' ConfigMap is renamed by its content: {renamed:?}"
        );
    }
}
