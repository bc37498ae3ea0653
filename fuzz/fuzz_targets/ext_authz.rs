#![no_main]
// Parser: Envoy `ext_authz` `CheckRequest` decoded and rebuilt (data-plane `forward_auth::ext_authz`).
// See gatehouse_tests::fuzz_entry::forward_auth::ext_authz_check for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gatehouse_tests::fuzz_entry::forward_auth::ext_authz_check(data)
});
