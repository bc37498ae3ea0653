#![no_main]
// Parser: `Cookie` header reading and session-cookie stripping (data-plane `auth::cookie`).
// See gatehouse_tests::fuzz_entry::cookie_header for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_tests::fuzz_entry::cookie_header(data));
