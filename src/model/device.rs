//! The compute device named on the command line, parsed once.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

use super::ModelError;

/// A device name: `cpu`, `cuda` (GPU 0) or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DeviceName {
    /// The CPU.
    #[default]
    Cpu,
    /// CUDA GPU number N.
    Cuda(usize),
}

impl FromStr for DeviceName {
    type Err = ModelError;

    fn from_str(name: &str) -> Result<Self, ModelError> {
        let name = name.trim();
        if name.eq_ignore_ascii_case("cpu") {
            return Ok(Self::Cpu);
        }
        if name.eq_ignore_ascii_case("cuda") {
            return Ok(Self::Cuda(0));
        }
        let n = name
            .strip_prefix("cuda:")
            .or_else(|| name.strip_prefix("CUDA:"))
            .ok_or_else(|| ModelError::BadDevice(name.to_string()))?;
        n.parse::<usize>()
            .map(Self::Cuda)
            .map_err(|_| ModelError::BadDevice(name.to_string()))
    }
}

impl fmt::Display for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceName {
    /// Open the device (a CUDA device needs the `cuda` feature and a GPU).
    pub fn open(&self) -> Result<Device, ModelError> {
        let ordinal = match self {
            Self::Cpu => return Ok(Device::Cpu),
            Self::Cuda(n) => *n,
        };
        if !cfg!(feature = "cuda") {
            return Err(ModelError::CudaNotBuilt(self.to_string()));
        }
        Device::new_cuda(ordinal).map_err(|e| ModelError::DeviceUnavailable {
            name: self.to_string(),
            message: super::error::message(&e),
        })
    }
}
