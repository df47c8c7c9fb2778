//! cargo-fuzz target `multipart_round_trip`: the gateway's multipart writer read back by the
//! sim's reader; see `tests/fuzz/targets.rs`.
#![no_main]

#[path = "../../tests/fuzz/targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (texts, file) = targets::fields_from_bytes(data);
    targets::multipart_round_trip(&texts, &file);
});
