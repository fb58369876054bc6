//! Model randomisation for the sanity check of Adebayo et al. (2018): the weights of chosen
//! decoder layers are replaced by Gaussian noise of the same shape and the same standard
//! deviation as the trained tensor (so activations keep their scale), seeded per tensor name;
//! the norms' scales are kept. Everything else loads as trained.

use std::hash::Hasher;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A backend that reads through `inner` and randomises the tensors of `layers`.
struct Randomizing {
    inner: VarBuilder<'static>,
    /// Name prefixes of the randomised layers (`model.language_model.layers.3.`).
    prefixes: Vec<String>,
    seed: u64,
}

/// A stable 64-bit FNV-1a hash of `name` (std's hasher may change between releases).
fn fnv(name: &str) -> u64 {
    struct Fnv(u64);
    impl Hasher for Fnv {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for b in bytes {
                self.0 = (self.0 ^ *b as u64).wrapping_mul(0x100_0000_01b3);
            }
        }
    }
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    h.write(name.as_bytes());
    h.finish()
}

impl Randomizing {
    fn randomised(&self, name: &str) -> bool {
        self.prefixes.iter().any(|p| name.starts_with(p)) && !name.ends_with("norm.weight")
    }

    /// Noise shaped like `trained`, with its standard deviation, on its device and dtype.
    fn noise(&self, name: &str, trained: &Tensor) -> candle_core::Result<Tensor> {
        let values = trained
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let n = values.len().max(1) as f64;
        let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = values
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        let std = var.sqrt().max(1e-6);
        let mut rng = StdRng::seed_from_u64(self.seed ^ fnv(name));
        let noise: Vec<f32> = (0..values.len())
            .map(|_| {
                // Box-Muller: two uniforms give one standard normal.
                let u1: f64 = rng.gen::<f64>().max(f64::MIN_POSITIVE);
                let u2: f64 = rng.gen();
                ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos() * std) as f32
            })
            .collect();
        Tensor::from_vec(noise, trained.shape(), &Device::Cpu)?
            .to_dtype(trained.dtype())?
            .to_device(trained.device())
    }
}

impl SimpleBackend for Randomizing {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: candle_nn::Init,
        dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.inner.get_with_hints_dtype(s, name, h, dtype)?;
        if self.randomised(name) {
            self.noise(name, &t)
        } else {
            Ok(t)
        }
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.inner.get_unchecked_dtype(name, dtype)?;
        if self.randomised(name) {
            self.noise(name, &t)
        } else {
            Ok(t)
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}

/// What a model-randomisation sanity check replaces: the decoder layers `layers`, with noise
/// seeded by `seed`. The model loaders take it (`load_randomized`) where they would otherwise
/// load the trained weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Randomize {
    /// The decoder layers whose tensors become noise.
    pub layers: std::ops::Range<usize>,
    /// The seed of the noise (with each tensor's name).
    pub seed: u64,
}

impl Randomize {
    /// `vb` with the tensors of these layers (under `text_prefix.layers.{i}.`) replaced.
    pub fn apply(&self, vb: VarBuilder<'static>, text_prefix: &str) -> VarBuilder<'static> {
        randomizing(vb, text_prefix, self.layers.clone(), self.seed)
    }
}

/// `vb` with the tensors of decoder layers `layers` (under `text_prefix.layers.{i}.`)
/// replaced by seeded noise (see the module documentation).
pub fn randomizing(
    vb: VarBuilder<'static>,
    text_prefix: &str,
    layers: std::ops::Range<usize>,
    seed: u64,
) -> VarBuilder<'static> {
    let (dtype, device) = (vb.dtype(), vb.device().clone());
    let prefixes = layers
        .map(|i| format!("{text_prefix}.layers.{i}."))
        .collect();
    let backend = Randomizing {
        inner: vb,
        prefixes,
        seed,
    };
    VarBuilder::from_backend(Box::new(backend), dtype, device)
}
