//! One copy of the weights for the app's two workers: the live-run worker (live runs and
//! follow-ups, [`super::live::Live`]) and the model-job worker ([`super::ModelService`]) look
//! in one [`SharedModel`] before loading, and put there what they load. [`RunSettings`] are the
//! app's `--device` / `--dtype`, which both use.

use std::sync::{Arc, Mutex, PoisonError};

use candle_core::DType;

use super::models::SessionModel;
use super::service::ModelSpec;
use crate::model::DeviceName;
use crate::session::Session;

/// Where and in what dtype models run when the caller says so (`lvlmscope tui --device
/// --dtype`); a setting left `None` keeps the request's, or for a saved session the one it
/// records (else CPU, f32).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSettings {
    /// Weights and activations dtype.
    pub dtype: Option<DType>,
    /// Where the model runs.
    pub device: Option<DeviceName>,
}

impl RunSettings {
    /// The spec of the model `session` was made with, these settings applied over the
    /// session's own.
    pub fn spec_for(&self, session: &Session) -> ModelSpec {
        self.apply(ModelSpec::for_session(session))
    }

    /// `spec` with these settings applied.
    pub fn apply(&self, spec: ModelSpec) -> ModelSpec {
        ModelSpec {
            dtype: self.dtype.unwrap_or(spec.dtype),
            device: self.device.unwrap_or(spec.device),
            path: spec.path,
        }
    }
}

/// A loaded model with the spec it was loaded for.
type Slot = Option<(ModelSpec, Arc<SessionModel>)>;

/// The model the app's workers hold, shared: one loaded model at a time.
#[derive(Clone, Default)]
pub struct SharedModel(Arc<Mutex<Slot>>);

impl std::fmt::Debug for SharedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_tuple("SharedModel")
            .field(&slot.as_ref().map(|(s, _)| s))
            .finish()
    }
}

impl SharedModel {
    /// The shared model when it is the one `spec` names.
    pub fn get(&self, spec: &ModelSpec) -> Option<Arc<SessionModel>> {
        let slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        slot.as_ref()
            .filter(|(s, _)| s == spec)
            .map(|(_, m)| m.clone())
    }

    /// Shares `model`, loaded for `spec` (the previous one is no longer shared).
    pub fn put(&self, spec: &ModelSpec, model: Arc<SessionModel>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some((spec.clone(), model));
    }

    /// Stops sharing the model (before another is loaded, so its memory can be freed).
    pub fn clear(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// The model `spec` names: the shared one, else loaded with `load` and shared.
    pub fn get_or_load<E>(
        &self,
        spec: &ModelSpec,
        load: impl FnOnce() -> Result<SessionModel, E>,
    ) -> Result<(Arc<SessionModel>, bool), E> {
        if let Some(m) = self.get(spec) {
            return Ok((m, false));
        }
        self.clear();
        let model = Arc::new(load()?);
        self.put(spec, model.clone());
        Ok((model, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::synthetic::{synthetic_session, SyntheticSpec};

    #[test]
    fn flags_win_over_what_the_session_records() {
        let mut s = synthetic_session(&SyntheticSpec::tiny());
        let none = RunSettings::default();
        // an older file records neither: f32 on the CPU
        let spec = none.spec_for(&s);
        assert_eq!((spec.dtype, spec.device), (DType::F32, DeviceName::Cpu));
        s.manifest.generation.dtype = Some("bf16".into());
        s.manifest.generation.device = Some("cuda:1".into());
        let spec = none.spec_for(&s);
        assert_eq!(
            (spec.dtype, spec.device),
            (DType::BF16, DeviceName::Cuda(1))
        );
        let flags = RunSettings {
            dtype: Some(DType::F16),
            device: Some(DeviceName::Cpu),
        };
        let spec = flags.spec_for(&s);
        assert_eq!((spec.dtype, spec.device), (DType::F16, DeviceName::Cpu));
        assert_eq!(spec.path, s.manifest.model.path);
    }

    #[test]
    fn the_shared_slot_loads_once_and_gives_only_the_model_of_its_spec() {
        let dir = crate::demo::demo_model_dir().expect("the demo model is written");
        let spec = ModelSpec {
            path: dir.display().to_string(),
            dtype: DType::F32,
            device: DeviceName::Cpu,
        };
        let shared = SharedModel::default();
        let load = || SessionModel::load(&spec, &candle_core::Device::Cpu);
        let (first, loaded) = shared.get_or_load(&spec, load).unwrap();
        assert!(loaded);
        let (again, loaded) = shared.clone().get_or_load(&spec, load).unwrap();
        assert!(!loaded && Arc::ptr_eq(&first, &again));
        let f16 = ModelSpec {
            dtype: DType::F16,
            ..spec.clone()
        };
        assert!(shared.get(&f16).is_none());
        let failed: Result<_, &str> = shared.get_or_load(&f16, || Err("no such model"));
        assert_eq!(failed.err(), Some("no such model"));
        assert!(shared.get(&spec).is_none(), "a load clears the slot first");
    }
}
