#![no_main]
// See gatehouse_tests::fuzz_entry::oidc::login_target for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_tests::fuzz_entry::oidc::login_target(data));
