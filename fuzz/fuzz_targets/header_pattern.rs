#![no_main]
// Parser: header-authentication user pattern (data-plane `auth::header`).
// See gatehouse_tests::fuzz_entry::header_pattern for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_tests::fuzz_entry::header_pattern(data));
