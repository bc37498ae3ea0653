#![no_main]
// Parser: the SAML Response posted to the ACS: shape checks, XML signature and assertion rules (control-plane `saml::Sp::verify`).
// See gatehouse_tests::fuzz_entry::saml::response for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_tests::fuzz_entry::saml::response(data));
