#![no_main]
// Parser: REST path routing and percent-decoding (control-plane `rest::routes`).
// See gatehouse_tests::fuzz_entry::rest::route_path for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_tests::fuzz_entry::rest::route_path(data));
