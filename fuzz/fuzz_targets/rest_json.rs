#![no_main]
// Parser: REST ticket and session request bodies (control-plane `rest::json`).
// See gatehouse_tests::fuzz_entry::rest::request_body for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_tests::fuzz_entry::rest::request_body(data));
