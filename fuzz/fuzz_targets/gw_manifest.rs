#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gatevault::fuzzing::gw_manifest(data));
