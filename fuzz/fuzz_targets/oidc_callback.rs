#![no_main]
// Parser: OpenID callback query and binding cookie (data-plane `endpoints::oidc::CallbackQuery`, control-plane `is_binding`).
// See gatehouse_tests::fuzz_entry::oidc::callback for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_tests::fuzz_entry::oidc::callback(data));
