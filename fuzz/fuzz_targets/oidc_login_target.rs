#![no_main]
// Parser: OpenID login target and redirect URI (data-plane `auth::oidc`, control-plane `authority::oidc_login`).
// See gatehouse_tests::fuzz_entry::oidc::login_target for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_tests::fuzz_entry::oidc::login_target(data));
