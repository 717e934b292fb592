//! Points in time in the config, written as RFC 3339 in UTC (`2026-12-01T09:00:00Z`).

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A UTC time, held as whole seconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The time `seconds` after the epoch.
    pub const fn from_unix(seconds: i64) -> Self {
        Self(seconds)
    }

    /// Seconds since the Unix epoch.
    pub const fn unix(self) -> i64 {
        self.0
    }

    /// Parses RFC 3339 in UTC (`…Z`; fractions of a second are dropped).
    pub fn parse(text: &str) -> Result<Self, String> {
        let time = humantime::parse_rfc3339_weak(text.trim()).map_err(|err| {
            format!(
                "invalid time {text:?} ({err}); expected RFC 3339, e.g. \"2026-12-01T09:00:00Z\""
            )
        })?;
        let seconds = time
            .duration_since(UNIX_EPOCH)
            .map_err(|_| format!("invalid time {text:?}: before 1970"))?
            .as_secs();
        i64::try_from(seconds)
            .map(Self)
            .map_err(|_| format!("invalid time {text:?}: too far in the future"))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = u64::try_from(self.0).unwrap_or(0);
        let time = UNIX_EPOCH + Duration::from_secs(seconds);
        write!(f, "{}", humantime::format_rfc3339_seconds(time))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl JsonSchema for Timestamp {
    fn schema_name() -> Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": "date-time",
            "description": "An RFC 3339 time such as \"2026-12-01T09:00:00Z\"."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_3339_round_trips_and_nonsense_is_refused() {
        let t = Timestamp::parse("2026-12-01T09:00:00Z").unwrap();
        assert_eq!(t.unix(), 1_796_115_600);
        assert_eq!(t.to_string(), "2026-12-01T09:00:00Z");
        assert!(
            Timestamp::parse("yesterday")
                .unwrap_err()
                .contains("RFC 3339")
        );
    }
}
