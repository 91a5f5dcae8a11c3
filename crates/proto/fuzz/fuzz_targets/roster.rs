#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| triad_core::fuzz::roster(data));
