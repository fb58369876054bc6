//! Stage spans that time the device honestly. GPU kernels are launched asynchronously, so a
//! span around them measures the launches, not the work; a [`Stage`] holds its span entered
//! and, only when `LVLMSCOPE_LOG_SYNC=1` and the span is enabled, waits for the device before
//! the span closes, so its busy time is the work. Nothing here sets up a subscriber (the binary
//! does, at its edge); without one every span is disabled and a [`Stage`] costs one check.

use std::sync::OnceLock;

use candle_core::Device;
use tracing::span::{EnteredSpan, Span};

/// The variable that asks stage spans to wait for the device before they close.
pub const SYNC_VAR: &str = "LVLMSCOPE_LOG_SYNC";

/// Whether stage spans wait for the device (`LVLMSCOPE_LOG_SYNC=1`), read once.
pub fn sync_enabled() -> bool {
    static SYNC: OnceLock<bool> = OnceLock::new();
    *SYNC.get_or_init(|| std::env::var(SYNC_VAR).is_ok_and(|v| v.trim() == "1"))
}

/// An entered span over work on a device; dropping it closes the span, after waiting for the
/// device when [`sync_enabled`] (so the span's busy time includes the kernels it launched).
#[must_use = "the stage closes when this is dropped"]
pub struct Stage {
    device: Option<Device>,
    span: EnteredSpan,
}

impl Stage {
    /// Enters `span` over work on `device`.
    pub fn new(span: Span, device: &Device) -> Self {
        Self {
            device: wants_sync(&span).then(|| device.clone()),
            span: span.entered(),
        }
    }

    /// Enters `span` after waiting for `device` (when [`sync_enabled`]), so work launched before
    /// it is not counted in it: for a copy to the host, which waits for every pending kernel.
    pub fn fenced(span: Span, device: &Device) -> Self {
        if wants_sync(&span) {
            wait(device);
        }
        Self::new(span, device)
    }

    /// The span, to record fields known only later.
    pub fn span(&self) -> &Span {
        &self.span
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        if let Some(device) = &self.device {
            wait(device);
        }
    }
}

/// Whether a stage over `span` waits for its device: the span is enabled and syncing is on.
fn wants_sync(span: &Span) -> bool {
    !span.is_disabled() && sync_enabled()
}

/// Waits for the work queued on `device`; a failure is logged, never raised (the work itself
/// will report it).
fn wait(device: &Device) {
    if let Err(e) = device.synchronize() {
        tracing::warn!("could not wait for the device: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_without_a_subscriber_holds_no_device() {
        let stage = Stage::new(tracing::info_span!("nothing"), &Device::Cpu);
        assert!(stage.span().is_disabled());
        assert!(stage.device.is_none());
    }
}
