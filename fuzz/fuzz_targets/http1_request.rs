#![no_main]
// Parser: request heads and their framing in the node's own HTTP/1.1 engine (data-plane `http1::request_head`), against hyper's server.
// See gatehouse_tests::fuzz_entry::http1::request_framing for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gatehouse_tests::fuzz_entry::http1::request_framing(data)
});
