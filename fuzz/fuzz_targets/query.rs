#![no_main]
// Parser: login-ticket query parameter and local redirect (data-plane `auth::query`).
// See gatehouse_tests::fuzz_entry::ticket_query for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_tests::fuzz_entry::ticket_query(data));
