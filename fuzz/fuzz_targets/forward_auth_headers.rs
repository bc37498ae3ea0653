#![no_main]
// Parser: original request rebuilt from `X-Original-*` / `X-Forwarded-*` (data-plane `forward_auth::original`).
// See gatehouse_tests::fuzz_entry::forward_auth::described_by_headers for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gatehouse_tests::fuzz_entry::forward_auth::described_by_headers(data)
});
