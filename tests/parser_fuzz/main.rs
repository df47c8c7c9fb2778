//! Property tests of the request parser and the WAV checker, in process (no binaries):
//! whatever bytes arrive, `GenerateRequest::parse` and `parse_wav` answer `Ok` or `Err` and
//! never panic; every refusal carries a documented status and code; every valid request is
//! accepted with its text trimmed and within the limits; and the injection rule (`check_text`)
//! refuses every C0 control character it is shown.
//!
//! `support` holds the limits, codes and WAVs; `strategies` the generators; `properties` the tests.

mod properties;
mod strategies;
mod support;
