#![no_main]
// Parser: chunked response bodies and response heads in the node's own HTTP/1.1 engine (data-plane `http1::relay`, `http1::response_head`), against hyper's client.
// See gatehouse_tests::fuzz_entry::http1::chunked_response for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gatehouse_tests::fuzz_entry::http1::chunked_response(data)
});
