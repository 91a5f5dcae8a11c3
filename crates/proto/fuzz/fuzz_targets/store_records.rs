#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| triad_proto::fuzz::store_records(data));
