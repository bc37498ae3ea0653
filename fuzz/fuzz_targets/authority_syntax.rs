#![no_main]
// Parser: `Host` syntax check (data-plane `request::authority`).
// See gatehouse_tests::fuzz_entry::authority_syntax for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_tests::fuzz_entry::authority_syntax(data));
