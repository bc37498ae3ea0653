#![no_main]
// See gatehouse_tests::fuzz_entry::oidc::discovery_document for what this target checks.
libfuzzer_sys::fuzz_target!(
    |data: &[u8]| gatehouse_tests::fuzz_entry::oidc::discovery_document(data)
);
