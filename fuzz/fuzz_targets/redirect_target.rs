#![no_main]
// Parser: login redirect-target validator (data-plane `auth::login::allowed_target`).
// See gatehouse_tests::fuzz_entry::redirect_target for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_tests::fuzz_entry::redirect_target(data));
