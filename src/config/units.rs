//! Units in the YAML file: durations (`250ms`, `30s`, `5m`, `24h`) and byte sizes (`512KiB`,
//! `10MiB`, `10GiB`, or a plain number of bytes). Parsing happens inside deserialization so a
//! bad value is reported with the file and line it stands on.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// A duration written as a number and a unit: `ms`, `s`, `m`, `h` or `d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConfDuration(pub Duration);

/// A size in bytes, written as a number with an optional unit: `B`, `KiB`, `MiB`, `GiB`, `TiB`
/// (powers of 1024) or `KB`, `MB`, `GB`, `TB` (powers of 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ConfDuration {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let value: f64 = num.parse().map_err(|_| {
            format!("invalid duration {s:?}: expected a number and a unit, like 250ms, 30s, 5m or 24h")
        })?;
        let secs = match unit.trim() {
            "ms" => value / 1000.0,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            "d" => value * 86400.0,
            "" => {
                return Err(format!(
                    "duration {s:?} has no unit: write it like 250ms, 30s, 5m or 24h"
                ))
            }
            other => {
                return Err(format!(
                    "unknown duration unit {other:?} in {s:?}: use ms, s, m, h or d"
                ))
            }
        };
        if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
            return Err(format!("duration {s:?} is out of range"));
        }
        Ok(Self(Duration::from_secs_f64(secs)))
    }
}

impl ByteSize {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let value: f64 = num.parse().map_err(|_| {
            format!("invalid size {s:?}: expected a number and a unit, like 512KiB, 10MiB or 10GiB")
        })?;
        let factor: f64 = match unit.trim() {
            "" | "B" => 1.0,
            "KiB" => 1024.0,
            "MiB" => 1024.0 * 1024.0,
            "GiB" => 1024.0 * 1024.0 * 1024.0,
            "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
            "KB" | "kB" => 1e3,
            "MB" => 1e6,
            "GB" => 1e9,
            "TB" => 1e12,
            other => {
                return Err(format!(
                    "unknown size unit {other:?} in {s:?}: use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB"
                ))
            }
        };
        let bytes = value * factor;
        if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
            return Err(format!("size {s:?} is out of range"));
        }
        Ok(Self(bytes.round() as u64))
    }

    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

struct UnitVisitor<T>(fn(&str) -> Result<T, String>, &'static str);

impl<T> Visitor<'_> for UnitVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.1)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.0)(v).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        (self.0)(&v.to_string()).map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        (self.0)(&v.to_string()).map_err(E::custom)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        (self.0)(&v.to_string()).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for ConfDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UnitVisitor(
            ConfDuration::parse,
            "a duration like 250ms, 30s or 24h",
        ))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UnitVisitor(ByteSize::parse, "a size like 10MiB or 10GiB"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            ConfDuration::parse("250ms").map(|d| d.0),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(
            ConfDuration::parse("30s").map(|d| d.0),
            Ok(Duration::from_secs(30))
        );
        assert_eq!(
            ConfDuration::parse("24h").map(|d| d.0),
            Ok(Duration::from_secs(86400))
        );
        assert_eq!(
            ConfDuration::parse("1.5m").map(|d| d.0),
            Ok(Duration::from_secs(90))
        );
        assert!(ConfDuration::parse("30").is_err());
        assert!(ConfDuration::parse("30 parsecs").is_err());
        assert!(ConfDuration::parse("s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("10MiB"), Ok(ByteSize(10 * 1024 * 1024)));
        assert_eq!(ByteSize::parse("10GiB"), Ok(ByteSize(10 << 30)));
        assert_eq!(ByteSize::parse("1500"), Ok(ByteSize(1500)));
        assert_eq!(ByteSize::parse("2MB"), Ok(ByteSize(2_000_000)));
        assert!(ByteSize::parse("10 MiBs").is_err());
        assert!(ByteSize::parse("lots").is_err());
    }
}
