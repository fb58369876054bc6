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
        let count = cuda_device_count().map_err(|message| ModelError::NoCudaDriver {
            name: self.to_string(),
            message,
        })?;
        if count == 0 {
            return Err(ModelError::NoCudaDriver {
                name: self.to_string(),
                message: "no GPU".to_string(),
            });
        }
        if ordinal >= count {
            return Err(ModelError::NoSuchGpu {
                name: self.to_string(),
                count,
            });
        }
        Device::new_cuda(ordinal).map_err(|e| ModelError::DeviceUnavailable {
            name: self.to_string(),
            message: super::error::message(&e),
        })
    }
}

/// Number of CUDA GPUs the driver sees, or the driver's own words when it cannot be asked
/// (no driver, no GPU, a driver older than the CUDA the binary was built for).
#[cfg(feature = "cuda")]
fn cuda_device_count() -> Result<usize, String> {
    use candle_core::cuda_backend::cudarc::driver::{result, CudaContext};
    result::init().map_err(|e| e.to_string())?;
    CudaContext::device_count()
        .map(|n| n.max(0) as usize)
        .map_err(|e| e.to_string())
}

/// Without the `cuda` feature no GPU is ever usable ([`DeviceName::open`] says so first).
#[cfg(not(feature = "cuda"))]
fn cuda_device_count() -> Result<usize, String> {
    Ok(0)
}
