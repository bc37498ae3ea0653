#![no_main]
// Parser: a SAML logout message at `/saml/slo` (HTTP-Redirect query, HTTP-POST form): signature, shape and field checks (control-plane `saml::Sp::read_logout_message`).
// See gatehouse_tests::fuzz_entry::saml_logout::logout_message for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_tests::fuzz_entry::saml_logout::logout_message(data));
