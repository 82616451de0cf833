//! Where the towers run: the CPU engine, or the candle towers on a GPU.
//!
//! The default build runs on the CPU only and needs no GPU toolkit. The Cargo features
//! `cuda` and `metal` build candle with that backend (as text-embeddings-inference forwards
//! them); a device asked for but not built in is an error naming the feature to enable.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Where the towers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Device {
    /// The hand-written CPU engine (every precision).
    #[default]
    Cpu,
    /// The candle towers on CUDA GPU `N` (feature `cuda`; `f32` only).
    Cuda(usize),
    /// The candle towers on Metal GPU `N` (feature `metal`; `f32` only).
    Metal(usize),
}

impl Device {
    /// Whether this build can run on the device (`cpu` always; a GPU with its feature).
    pub fn built_in(self) -> bool {
        match self {
            Device::Cpu => true,
            Device::Cuda(_) => cfg!(feature = "cuda"),
            Device::Metal(_) => cfg!(feature = "metal"),
        }
    }

    /// The candle device for the candle towers.
    pub(crate) fn candle(self) -> Result<candle_core::Device> {
        let not_built = |feature: &str| {
            Error::InvalidInput(format!(
                "device {self} needs a build with the `{feature}` feature \
                 (cargo build --release --features {feature})"
            ))
        };
        match self {
            Device::Cpu => Ok(candle_core::Device::Cpu),
            Device::Cuda(_) if !self.built_in() => Err(not_built("cuda")),
            Device::Metal(_) if !self.built_in() => Err(not_built("metal")),
            Device::Cuda(n) => Ok(candle_core::Device::new_cuda(n)?),
            Device::Metal(n) => Ok(candle_core::Device::new_metal(n)?),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
            Device::Metal(n) => write!(f, "metal:{n}"),
        }
    }
}

impl FromStr for Device {
    type Err = Error;

    /// `cpu`, `cuda`, `cuda:N`, `metal` or `metal:N` (`N` counted from 0).
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::InvalidInput(format!(
                "unknown device {s:?} (expected cpu, cuda, cuda:N, metal or metal:N)"
            ))
        };
        let (kind, index) = match s.split_once(':') {
            Some((kind, n)) => (kind, n.parse::<usize>().map_err(|_| bad())?),
            None => (s, 0),
        };
        match kind {
            "cpu" if !s.contains(':') => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(index)),
            "metal" => Ok(Device::Metal(index)),
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_devices() {
        for (text, device) in [
            ("cpu", Device::Cpu),
            ("cuda", Device::Cuda(0)),
            ("cuda:1", Device::Cuda(1)),
            ("metal:0", Device::Metal(0)),
        ] {
            assert_eq!(text.parse::<Device>().unwrap(), device);
        }
        assert_eq!(Device::Cuda(2).to_string(), "cuda:2");
        for bad in ["gpu", "cuda:", "cuda:x", "cpu:0", ""] {
            assert!(bad.parse::<Device>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn a_device_not_built_in_names_its_feature() {
        if cfg!(feature = "cuda") {
            return;
        }
        let err = Device::Cuda(0).candle().unwrap_err().to_string();
        assert!(err.contains("`cuda` feature"), "{err}");
    }
}
