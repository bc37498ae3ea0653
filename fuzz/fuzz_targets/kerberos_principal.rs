#![no_main]
// Parser: Kerberos principal split into user and realm (control-plane `kerberos::split_principal`).
// See gatehouse_tests::fuzz_entry::kerberos::principal for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_tests::fuzz_entry::kerberos::principal(data));
