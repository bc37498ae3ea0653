//! The identity provider's metadata from a file (`idp_metadata_file`) is read again when the
//! file changes, looked at every `metadata_refresh`, without a reload: a provider that rolls
//! its signing key over is followed, and a file that cannot be used leaves the last good
//! metadata in place. The site and its logins are those of `saml`.

use std::time::Duration;

use super::saml::site_with_metadata;
use crate::harness::captured_log::CapturedLog;
use crate::harness::client;
use crate::harness::eventually;

const NOT_SIGNED: &str = "not signed by the identity provider";

#[tokio::test]
async fn a_replaced_metadata_file_is_read_again_and_an_unusable_one_keeps_the_last_good() {
    let log = CapturedLog::install();
    let dir = tempfile::TempDir::new().expect("a temporary directory");
    let file = dir.path().join("idp-metadata.xml");
    let Some(site) = site_with_metadata(|idp| {
        std::fs::copy(idp.metadata_file(), &file).expect("copy the metadata");
        format!("idp_metadata_file = {file:?}\nmetadata_refresh = \"1s\"")
    })
    .await
    else {
        return;
    };
    let own = site.altered("assertion", false, |xml| xml).await;
    assert_eq!(own.status, 302, "the provider's own key: {}", own.text());
    let other = site.altered("assertion", true, |xml| xml).await;
    assert_eq!(other.status, 401, "{}", other.text());
    assert!(other.text().contains(NOT_SIGNED), "{}", other.text());

    // The provider rolls its signing key over; the file is replaced, nothing reloaded.
    std::fs::write(&file, site.idp.metadata_after_rollover()).expect("write the metadata");
    eventually(
        "a Response signed by the new key taken",
        Duration::from_secs(10),
        || async {
            let answer = site.altered("assertion", true, |xml| xml).await;
            (answer.status == 302).then_some(())
        },
    )
    .await;
    assert!(log.contains("metadata file read again"));
    let retired = site.altered("assertion", false, |xml| xml).await;
    assert_eq!(retired.status, 401, "the retired key: {}", retired.text());
    assert!(retired.text().contains(NOT_SIGNED), "{}", retired.text());

    // A file that is no metadata (a copy cut short) is noticed, logged and not used.
    std::fs::write(&file, "<md:EntityDescriptor").expect("write the metadata");
    // A browser without a session asks for the service provider, and so for the look.
    let hub = site.node.url("/app/hub");
    eventually(
        "the unusable file noticed",
        Duration::from_secs(10),
        || async {
            let _ = client::get(&hub, &[]).await;
            log.contains("keeping the metadata read before")
                .then_some(())
        },
    )
    .await;
    let kept = site.altered("assertion", true, |xml| xml).await;
    assert_eq!(kept.status, 302, "the last good metadata: {}", kept.text());
}
