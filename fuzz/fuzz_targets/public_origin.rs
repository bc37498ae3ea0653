#![no_main]
// Parser: `Host` and public-origin matching (`gatehouse_proto::origin`, data-plane `origin`).
// See gatehouse_tests::fuzz_entry::public_origin for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_tests::fuzz_entry::public_origin(data));
