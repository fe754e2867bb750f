#![no_main]
// The harness is shared with the stable driver (examples/fuzz_parsers.rs): qeltrix::fuzzing.
libfuzzer_sys::fuzz_target!(|data: &[u8]| qeltrix::fuzzing::read_at(data));
