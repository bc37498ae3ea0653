#![no_main]
// Parser: identity headers, encoded then decoded (data-plane `proxy::headers`, `identity_headers`).
// See gatehouse_tests::fuzz_entry::identity_headers for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_tests::fuzz_entry::identity_headers(data));
