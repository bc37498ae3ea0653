//! Changing virtual proxies without a restart: the control plane rereads its file and pushes
//! the new set to running nodes, which start serving it without dropping open WebSockets.

use std::time::Duration;

use crate::browser::fixtures::{AppProxy, COOKIE, assert_still_open, open_socket};
use crate::harness::auth_module::{session_cookie, user};
use crate::harness::captured_log::CapturedLog;
use crate::harness::client::get;
use crate::harness::control_plane::NODE_SECRET;
use crate::harness::upstream::EchoUpstream;
use crate::harness::{ControlPlane, DataPlaneNode, eventually};

/// What the control plane logs when a changed file does not load.
const REFUSED_RELOAD: &str = "configuration not reloaded; the current one stays in force";

#[tokio::test]
async fn a_reloaded_virtual_proxy_reaches_running_nodes_without_dropping_websockets() {
    let upstream = EchoUpstream::start("engine").await;
    let base = format!(
        "[node_api]\nshared_secret = \"{NODE_SECRET}\"\n{}",
        AppProxy::new([upstream.node()]).toml()
    );
    let file = std::env::temp_dir().join(format!("gatehouse-reload-{}.toml", std::process::id()));
    std::fs::write(&file, &base).unwrap();
    // Installed before the control plane starts, so its reloader logs here.
    let log = CapturedLog::install();
    let control = ControlPlane::start_reloading(&file).await;
    let node = DataPlaneNode::start(&control).await;
    let (cookie, _) = session_cookie(&control, "app", COOKIE, user("CORP", "alice")).await;
    let mut socket = open_socket(&node, &cookie).await;
    assert_eq!(
        get(&node.url("/extra/hub"), &[]).await.status,
        404,
        "no such proxy yet"
    );

    let extra = format!(
        "{base}\n[[virtual_proxies]]\nprefix = \"extra\"\nanonymous = \"always\"\n[virtual_proxies.upstream]\nnodes = [\"{}\"]\n",
        upstream.node()
    );
    std::fs::write(&file, extra).unwrap();
    let url = node.url("/extra/hub");
    eventually(
        "the node to serve the new virtual proxy",
        Duration::from_secs(10),
        || {
            let url = url.clone();
            async move { (get(&url, &[]).await.status == 200).then_some(()) }
        },
    )
    .await;
    assert_still_open(&mut socket).await;

    // A broken file changes nothing: once the control plane has read and refused it, the node
    // still serves the proxy it had.
    std::fs::write(&file, "[[virtual_proxies]]\nprefix = \"Bad\"\n").unwrap();
    eventually(
        "the control plane to refuse the broken file",
        Duration::from_secs(10),
        || async { log.contains(REFUSED_RELOAD).then_some(()) },
    )
    .await;
    assert_eq!(get(&node.url("/extra/hub"), &[]).await.status, 200);
    assert_still_open(&mut socket).await;
    let _ = std::fs::remove_file(&file);
}

/// A ConfigMap volume as the kubelet writes it: the files in a timestamped directory, a
/// `..data` symlink to it, and each file a symlink through `..data`.
struct ConfigMapVolume {
    dir: tempfile::TempDir,
    version: u32,
}

impl ConfigMapVolume {
    const FILE: &str = "control-plane.toml";

    fn new(contents: &str) -> Self {
        let mut volume = Self {
            dir: tempfile::tempdir().unwrap(),
            version: 0,
        };
        volume.update(contents);
        std::os::unix::fs::symlink(
            std::path::Path::new("..data").join(Self::FILE),
            volume.path(),
        )
        .unwrap();
        volume
    }

    /// The path the control plane is given, as `--config` names it in the manifests.
    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join(Self::FILE)
    }

    /// What the kubelet does when the ConfigMap changes: the new files in a new directory,
    /// `..data` replaced by renaming a new symlink over it, the old directory removed. The
    /// file the control plane was given is never written.
    fn update(&mut self, contents: &str) {
        let old = format!("..2026_12_03_10_00_00.{}", self.version);
        self.version += 1;
        let new = format!("..2026_12_03_10_00_00.{}", self.version);
        std::fs::create_dir(self.dir.path().join(&new)).unwrap();
        std::fs::write(self.dir.path().join(&new).join(Self::FILE), contents).unwrap();
        let staged = self.dir.path().join("..data_tmp");
        std::os::unix::fs::symlink(&new, &staged).unwrap();
        std::fs::rename(&staged, self.dir.path().join("..data")).unwrap();
        let _ = std::fs::remove_dir_all(self.dir.path().join(old));
    }
}

#[tokio::test]
async fn a_configmap_update_swapping_the_data_symlink_reaches_running_nodes() {
    let upstream = EchoUpstream::start("engine").await;
    let base = format!(
        "[node_api]\nshared_secret = \"{NODE_SECRET}\"\n{}",
        AppProxy::new([upstream.node()]).toml()
    );
    let mut volume = ConfigMapVolume::new(&base);
    let control = ControlPlane::start_reloading(&volume.path()).await;
    let node = DataPlaneNode::start(&control).await;
    let url = node.url("/extra/hub");
    assert_eq!(get(&url, &[]).await.status, 404, "no such proxy yet");

    volume.update(&format!(
        "{base}\n[[virtual_proxies]]\nprefix = \"extra\"\nanonymous = \"always\"\n[virtual_proxies.upstream]\nnodes = [\"{}\"]\n",
        upstream.node()
    ));
    eventually(
        "the node to serve the virtual proxy of the updated ConfigMap",
        Duration::from_secs(10),
        || {
            let url = url.clone();
            async move { (get(&url, &[]).await.status == 200).then_some(()) }
        },
    )
    .await;
}
