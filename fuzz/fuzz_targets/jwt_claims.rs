#![no_main]
// Parser: JWT header and claims, signed: `alg` handling, `exp`/`nbf`/`iss`/`aud`, claims to user (control-plane `jwt`).
// See gatehouse_tests::fuzz_entry::jwt::signed_claims for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_tests::fuzz_entry::jwt::signed_claims(data));
