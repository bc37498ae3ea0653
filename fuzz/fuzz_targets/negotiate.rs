#![no_main]
// Parser: `Authorization: Negotiate` header and `WWW-Authenticate` answer (data-plane `auth::kerberos`).
// See gatehouse_tests::fuzz_entry::kerberos::negotiate_header for what this target checks.
libfuzzer_sys::fuzz_target!(
    |data: &[u8]| gatehouse_tests::fuzz_entry::kerberos::negotiate_header(data)
);
