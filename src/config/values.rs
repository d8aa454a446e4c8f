//! The value types of `config.yaml` that read more than serde's defaults: durations with
//! units (`Span`), sizes with units (`Size`), and switches that default to on (`On`).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Durations with units: the type is the actors' (the simulator's scenarios read them too).
pub use ccs_actors::Span;

/// Why a duration or a size in config.yaml does not read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error(transparent)]
    Duration(#[from] ccs_actors::clock::SpanError),
    #[error("{0:?} is not a size (try 33554432 or 32MiB)")]
    NotASize(String),
    #[error("unknown unit {unit:?} in {value:?} (use KiB, MiB or GiB)")]
    SizeUnit { unit: String, value: String },
}

/// A duration as people read it: "5m", "2h 13m", "3d 4h" (under an hour, minutes round up).
pub fn words(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 86_400 {
        format!("{}d {}h", s / 86_400, (s % 86_400) / 3600)
    } else if s >= 3600 {
        format!("{}h {:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}m", s.div_ceil(60).max(1))
    }
}

/// A byte size written as a number or with a unit (`32MiB`, `512KiB`, `10MB`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

impl Size {
    pub fn parse(s: &str) -> Result<Size, ValueError> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| ValueError::NotASize(s.to_string()))?;
        let mult = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kib" | "k" => 1 << 10,
            "mib" | "m" => 1 << 20,
            "gib" | "g" => 1 << 30,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            u => {
                return Err(ValueError::SizeUnit {
                    unit: u.to_string(),
                    value: s.to_string(),
                })
            }
        };
        Ok(Size(n.saturating_mul(mult)))
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(n) => Ok(Size(n)),
            Raw::Text(t) => Size::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// A switch that is on unless config.yaml says `false`.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct On(pub bool);

impl Default for On {
    fn default() -> Self {
        On(true)
    }
}
