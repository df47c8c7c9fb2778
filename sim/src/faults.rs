//! Injected faults (`POST /__sim/fault`): which failure the next N synthesis requests get, and
//! the simulated crash.

use serde::Deserialize;
use std::sync::Mutex;

/// Exit code of the process for the `crash` fault.
pub const CRASH_EXIT_CODE: i32 = 3;

/// How a synthesis request fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// `500 Internal Server Error`, text/plain.
    Error500,
    /// `200`, the first chunk of audio, then the connection is cut.
    Truncate,
    /// No answer at all, until the client goes away.
    Hang,
    /// The process exits at once, without answering.
    Crash,
    /// `200`, then audio forever, as fast as the client reads it (a runaway backend).
    Endless,
}

/// The body of `POST /__sim/fault`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRequest {
    pub kind: FaultKind,
    #[serde(default = "one")]
    pub count: u64,
}

fn one() -> u64 {
    1
}

/// The armed fault, if any, and how many more requests it hits.
#[derive(Debug, Default)]
pub struct Faults(Mutex<Option<(FaultKind, u64)>>);

impl Faults {
    /// Arms `kind` for the next `count` requests (replacing any armed fault; 0 disarms).
    pub fn arm(&self, kind: FaultKind, count: u64) {
        *self.lock() = (count > 0).then_some((kind, count));
    }

    pub fn clear(&self) {
        *self.lock() = None;
    }

    /// The fault this request gets, consuming one count.
    pub fn take(&self) -> Option<FaultKind> {
        let mut armed = self.lock();
        let (kind, left) = (*armed)?;
        *armed = (left > 1).then_some((kind, left - 1));
        Some(kind)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(FaultKind, u64)>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The `crash` fault: the process ends now, like a segfaulting worker.
pub fn crash() -> ! {
    log::error!("simulated crash (fault injected): exiting");
    std::process::exit(CRASH_EXIT_CODE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_hits_exactly_count_requests() {
        let f = Faults::default();
        assert_eq!(f.take(), None);
        f.arm(FaultKind::Truncate, 2);
        assert_eq!(f.take(), Some(FaultKind::Truncate));
        assert_eq!(f.take(), Some(FaultKind::Truncate));
        assert_eq!(f.take(), None);
        f.arm(FaultKind::Hang, 0);
        assert_eq!(f.take(), None);
        let r: FaultRequest = serde_json::from_str(r#"{"kind":"error500","count":3}"#).expect("parses");
        assert_eq!((r.kind, r.count), (FaultKind::Error500, 3));
        let r: FaultRequest = serde_json::from_str(r#"{"kind":"endless"}"#).expect("parses");
        assert_eq!((r.kind, r.count), (FaultKind::Endless, 1));
        assert!(serde_json::from_str::<FaultRequest>(r#"{"kind":"nope"}"#).is_err());
    }
}
