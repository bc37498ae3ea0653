#![no_main]
// Parser: both configuration parsers (control plane and data plane TOML).
// See gatehouse_tests::fuzz_entry::configuration for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_tests::fuzz_entry::configuration(data));
