#![no_main]
// Parser: admin-port and plaintext REST `Host` check, admin bearer token (`admin_access`).
// See gatehouse_tests::fuzz_entry::rest::admin_access for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_tests::fuzz_entry::rest::admin_access(data));
