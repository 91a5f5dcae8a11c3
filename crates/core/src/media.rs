//! The kinds of media a store or folder lives on. One enum, used everywhere.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A media class. The policy counts distinct classes ("media >= 2").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Media {
    /// An internal solid-state disk.
    Ssd,
    /// An internal spinning disk.
    Hdd,
    /// A RAID array (a NAS).
    Raid,
    /// A USB solid-state disk.
    UsbSsd,
    /// A USB spinning disk.
    UsbHdd,
    /// A memory card.
    Sd,
    /// Optical media.
    Optical,
    /// A cloud bucket.
    Cloud,
}

impl Media {
    /// Every class, in a stable order.
    pub const ALL: [Media; 8] = [
        Media::Ssd,
        Media::Hdd,
        Media::Raid,
        Media::UsbSsd,
        Media::UsbHdd,
        Media::Sd,
        Media::Optical,
        Media::Cloud,
    ];

    /// The spelling used in the CLI, config files and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Media::Ssd => "ssd",
            Media::Hdd => "hdd",
            Media::Raid => "raid",
            Media::UsbSsd => "usb-ssd",
            Media::UsbHdd => "usb-hdd",
            Media::Sd => "sd",
            Media::Optical => "optical",
            Media::Cloud => "cloud",
        }
    }
}

impl fmt::Display for Media {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A media name was not one of the known classes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown media {given:?}: use one of ssd, hdd, raid, usb-ssd, usb-hdd, sd, optical, cloud")]
pub struct ParseMediaError {
    /// What was given.
    pub given: String,
}

impl FromStr for Media {
    type Err = ParseMediaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase().replace('_', "-");
        Media::ALL
            .into_iter()
            .find(|m| m.as_str() == lower)
            .ok_or_else(|| ParseMediaError { given: s.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() {
        for media in Media::ALL {
            assert_eq!(media.as_str().parse::<Media>(), Ok(media));
        }
        assert_eq!("USB_HDD".parse::<Media>(), Ok(Media::UsbHdd));
        assert!("floppy".parse::<Media>().is_err());
    }
}
