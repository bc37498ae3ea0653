#![no_main]
// Parser: request path normalisation (data-plane `request::path`).
// See gatehouse_tests::fuzz_entry::request_path for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_tests::fuzz_entry::request_path(data));
