#![no_main]
// Parser: `Authorization: Bearer` reading (data-plane `auth::jwt`) and JWT header decoding and verification (control-plane `jwt::Verifier`).
// See gatehouse_tests::fuzz_entry::jwt::bearer_token for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_tests::fuzz_entry::jwt::bearer_token(data));
