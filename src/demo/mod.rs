//! The embedded demo: a synthetic scene generator with known object masks (and, once trained,
//! a tiny LLaVA and a few demo scenes shipped inside the binary).

pub mod draw;
pub mod mask;
pub mod scenes;

pub use draw::{Background, Color, Shape};
pub use mask::{Mask, MaskError, RleMask};
pub use scenes::{generate, scene_seed, Question, QuestionKind, Scene, SceneConfig, SceneObject};
