#![no_main]
// Parser: the spellings of a path the access rules decide: percent-decoding, `;` parameters, dot segments, NFKC and case folding (data-plane `auth::rules`), and public paths, which must be public in every spelling (`request::public`).
// See gatehouse_tests::fuzz_entry::access_rules for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_tests::fuzz_entry::access_rules(data));
