#![no_main]
// See gatehouse_tests::fuzz_entry::redirect_target for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_tests::fuzz_entry::redirect_target(data));
