#![no_main]
// See gatehouse_tests::fuzz_entry::jwt::signed_claims for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_tests::fuzz_entry::jwt::signed_claims(data));
