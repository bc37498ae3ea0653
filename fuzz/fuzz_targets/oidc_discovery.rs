#![no_main]
// Parser: OpenID discovery document (control-plane `oidc::discovery`).
// See gatehouse_tests::fuzz_entry::oidc::discovery_document for what this target checks.
libfuzzer_sys::fuzz_target!(
    |data: &[u8]| gatehouse_tests::fuzz_entry::oidc::discovery_document(data)
);
