#![no_main]
// Parser: `Xrfkey` query parameter and `X-Qlik-Xrfkey` header check (control-plane `rest::xrfkey`).
// See gatehouse_tests::fuzz_entry::rest::xrfkey for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_tests::fuzz_entry::rest::xrfkey(data));
