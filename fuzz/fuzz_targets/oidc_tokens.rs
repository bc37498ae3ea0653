#![no_main]
// Parser: OpenID ID-token and logout-token claim checks, claims to user (control-plane `oidc::claims`, `jwt::user_from_claims`).
// See gatehouse_tests::fuzz_entry::oidc::token_claims for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_tests::fuzz_entry::oidc::token_claims(data));
