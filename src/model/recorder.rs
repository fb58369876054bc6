//! The one place where attention probabilities are captured.
//!
//! Attention modules hand their softmax output to an [`AttentionRecorder`]; what is kept
//! depends on the [`CaptureMode`]:
//! - generated rows: for every forward call, the last query row of every decoder layer (the
//!   row whose logits give the next token). Only that row is taken off the device, once per
//!   forward call for all layers together.
//! - full layers: every query row of the chosen decoder layers.
//! - vision: every attention matrix of the vision tower layers that run.
//! - vision rows ([`AttentionRecorder::keep_vision_rows`]): one row per head of every view of
//!   a batched tower run (an anyres image's base view and tiles), reduced on the device.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Result, Tensor};

use super::tape::{Site, Tape, Tower};
use crate::trace::Stage;

/// What the recorder keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureMode {
    /// Keep the last query row of every decoder layer, per forward call.
    pub generated_rows: bool,
    /// Decoder layers whose full attention matrices are kept.
    pub full_layers: Vec<usize>,
    /// Keep the vision tower's attention.
    pub vision: bool,
}

impl CaptureMode {
    /// Record nothing.
    pub fn off() -> Self {
        Self {
            generated_rows: false,
            full_layers: Vec::new(),
            vision: false,
        }
    }

    /// The default: generated rows only. (`num_layers` is accepted for symmetry with
    /// [`CaptureMode::with_last_layer`]; the default keeps no full layer.)
    pub fn default_for(_num_layers: usize) -> Self {
        Self {
            generated_rows: true,
            full_layers: Vec::new(),
            vision: false,
        }
    }

    /// Add the full matrices of the last of `num_layers` decoder layers (what CLEANN needs).
    pub fn with_last_layer(mut self, num_layers: usize) -> Self {
        if let Some(last) = num_layers.checked_sub(1) {
            if !self.full_layers.contains(&last) {
                self.full_layers.push(last);
            }
        }
        self
    }

    /// Whether nothing at all is recorded.
    pub fn is_off(&self) -> bool {
        !self.generated_rows && self.full_layers.is_empty() && !self.vision
    }
}

impl Default for CaptureMode {
    fn default() -> Self {
        Self::default_for(0)
    }
}

/// A block of query rows of one layer: `data` is `[H, q_len, kv_len]`.
#[derive(Debug, Clone)]
struct Block {
    q_offset: usize,
    q_len: usize,
    kv_len: usize,
    heads: usize,
    data: Vec<f32>,
}

/// One forward call's last rows: `data` is `[L, H, kv_len]`.
#[derive(Debug, Clone)]
struct RowStep {
    layers: usize,
    heads: usize,
    kv_len: usize,
    data: Vec<f32>,
}

/// Collects attention probabilities as the model runs.
#[derive(Debug, Clone)]
pub struct AttentionRecorder {
    mode: CaptureMode,
    pending_rows: Vec<(usize, Tensor)>,
    rows: Vec<RowStep>,
    full: BTreeMap<usize, Vec<Block>>,
    vision: BTreeMap<usize, Block>,
    vision_rows: Option<VisionRowKind>,
    view_rows: BTreeMap<usize, Block>,
}

/// Which row of each vision attention matrix [`AttentionRecorder::keep_vision_rows`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisionRowKind {
    /// Query row 0 (the class token) over the other tokens.
    Class,
    /// The mean over query rows: the attention each token receives.
    Received,
}

fn to_f32_vec(t: &Tensor) -> Result<Vec<f32>> {
    let span = tracing::debug_span!("copy_to_host", elements = t.elem_count());
    let _stage = Stage::fenced(span, t.device());
    t.to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()
}

impl AttentionRecorder {
    /// A recorder that keeps what `mode` asks for.
    pub fn new(mode: CaptureMode) -> Self {
        Self {
            mode,
            pending_rows: Vec::new(),
            rows: Vec::new(),
            full: BTreeMap::new(),
            vision: BTreeMap::new(),
            vision_rows: None,
            view_rows: BTreeMap::new(),
        }
    }

    /// Also keep, for every view of the vision tower's batch, one row per layer and head
    /// (`kind`), reduced on the device; [`AttentionRecorder::view_rows`] gives them.
    pub fn keep_vision_rows(mut self, kind: VisionRowKind) -> Self {
        self.vision_rows = Some(kind);
        self
    }

    /// A recorder that keeps nothing.
    pub fn off() -> Self {
        Self::new(CaptureMode::off())
    }

    /// The capture mode.
    pub fn mode(&self) -> &CaptureMode {
        &self.mode
    }

    /// Forget everything recorded (the mode stays).
    pub fn clear(&mut self) {
        self.pending_rows.clear();
        self.rows.clear();
        self.full.clear();
        self.vision.clear();
        self.view_rows.clear();
    }

    /// Forget the recorded rows (the rows of the next turn of a conversation start afresh);
    /// the full matrices and the vision attention stay.
    pub fn clear_rows(&mut self) {
        self.pending_rows.clear();
        self.rows.clear();
    }

    /// Forget everything recorded in the decoder (rows and full matrices), keeping the vision
    /// tower's attention: before the decoder runs a new sequence over the same image.
    pub fn clear_text(&mut self) {
        self.clear_rows();
        self.full.clear();
    }

    /// Number of forward calls whose rows were recorded.
    pub fn num_rows(&self) -> usize {
        self.rows.len()
    }

    /// Whether decoder layer `layer` needs its probabilities handed over at all.
    pub(crate) fn wants_text(&self, layer: usize) -> bool {
        self.mode.generated_rows || self.mode.full_layers.contains(&layer)
    }

    /// Whether the vision tower's probabilities are wanted.
    pub(crate) fn wants_vision(&self) -> bool {
        self.mode.vision || self.vision_rows.is_some()
    }

    /// Called from decoder attention: `probs` is `[1, H, q_len, kv_len]`, query rows start at
    /// absolute position `q_offset`.
    pub(crate) fn record_text(
        &mut self,
        layer: usize,
        probs: &Tensor,
        q_offset: usize,
    ) -> Result<()> {
        let (_, heads, q_len, kv_len) = probs.dims4()?;
        if self.mode.generated_rows && q_len > 0 {
            let last = probs.narrow(2, q_len - 1, 1)?.reshape((1, heads, kv_len))?;
            self.pending_rows.push((layer, last));
        }
        if self.mode.full_layers.contains(&layer) {
            let data = to_f32_vec(probs)?;
            self.full.entry(layer).or_default().push(Block {
                q_offset,
                q_len,
                kv_len,
                heads,
                data,
            });
        }
        Ok(())
    }

    /// Called once at the end of each decoder forward call: moves the pending last rows of all
    /// layers off the device in one transfer.
    pub(crate) fn flush_rows(&mut self) -> Result<()> {
        if self.pending_rows.is_empty() {
            return Ok(());
        }
        let mut pending = std::mem::take(&mut self.pending_rows);
        pending.sort_by_key(|(l, _)| *l);
        let (_, heads, kv_len) = pending[0].1.dims3()?;
        let tensors: Vec<Tensor> = pending.into_iter().map(|(_, t)| t).collect();
        let layers = tensors.len();
        let data = to_f32_vec(&Tensor::cat(&tensors, 0)?)?;
        self.rows.push(RowStep {
            layers,
            heads,
            kv_len,
            data,
        });
        Ok(())
    }

    /// Called from vision attention: `probs` is `[1, H, n, n]`. A call for layer 0 starts a new
    /// image (earlier vision records are dropped).
    pub(crate) fn record_vision(&mut self, layer: usize, probs: &Tensor) -> Result<()> {
        if let Some(kind) = self.vision_rows {
            self.record_view_rows(layer, probs, kind)?;
        }
        if !self.mode.vision {
            return Ok(());
        }
        if layer == 0 {
            self.vision.clear();
        }
        let (_, heads, q_len, kv_len) = probs.dims4()?;
        let data = to_f32_vec(probs)?;
        self.vision.insert(
            layer,
            Block {
                q_offset: 0,
                q_len,
                kv_len,
                heads,
                data,
            },
        );
        Ok(())
    }

    /// Keeps one row a head of every view of `probs` `[V, H, n, n]`: `[V, H, n − 1]` (class
    /// row, the class token's own column dropped) or `[V, H, n]` (received).
    fn record_view_rows(
        &mut self,
        layer: usize,
        probs: &Tensor,
        kind: VisionRowKind,
    ) -> Result<()> {
        let n = probs.dim(3)?;
        let rows = match kind {
            VisionRowKind::Class => probs.narrow(2, 0, 1)?.narrow(3, 1, n - 1)?.squeeze(2)?,
            VisionRowKind::Received => probs.to_dtype(DType::F32)?.mean(2)?,
        };
        self.store_view_rows(layer, &rows)
    }

    /// Keeps `rows` `[V, H, P]` as layer `layer`'s rows of every view (layer 0 starts a new
    /// tower run).
    fn store_view_rows(&mut self, layer: usize, rows: &Tensor) -> Result<()> {
        if layer == 0 {
            self.view_rows.clear();
        }
        let (views, heads, kv_len) = rows.dims3()?;
        self.view_rows.insert(
            layer,
            Block {
                q_offset: 0,
                q_len: views,
                kv_len,
                heads,
                data: to_f32_vec(rows)?,
            },
        );
        Ok(())
    }

    /// One `[Lv, H, P]` array (shape, data) per view of the last tower run kept by
    /// [`AttentionRecorder::keep_vision_rows`]; `None` when nothing was kept or the layers
    /// disagree.
    pub fn view_rows(&self) -> Option<Vec<(Vec<usize>, Vec<f32>)>> {
        let first = self.view_rows.values().next()?;
        let (views, heads, p) = (first.q_len, first.heads, first.kv_len);
        let layers = self.view_rows.len();
        let mut out = vec![Vec::with_capacity(layers * heads * p); views];
        for (i, (l, b)) in self.view_rows.iter().enumerate() {
            if *l != i || b.q_len != views || b.heads != heads || b.kv_len != p {
                return None;
            }
            for (v, view) in out.iter_mut().enumerate() {
                view.extend_from_slice(&b.data[v * heads * p..(v + 1) * heads * p]);
            }
        }
        Some(
            out.into_iter()
                .map(|data| (vec![layers, heads, p], data))
                .collect(),
        )
    }

    /// `[T, L, H, S]` row-major f32: one row per forward call (the last query row of each
    /// call), zero-padded (or cut) to `total_positions` keys. `None` when no row was recorded
    /// or the recorded rows do not have `num_layers` × `num_heads`.
    pub fn generated_rows(
        &self,
        num_layers: usize,
        num_heads: usize,
        total_positions: usize,
    ) -> Option<(Vec<usize>, Vec<f32>)> {
        if self.rows.is_empty() {
            return None;
        }
        let s = total_positions;
        let t_len = self.rows.len();
        let mut out = vec![0f32; t_len * num_layers * num_heads * s];
        for (t, step) in self.rows.iter().enumerate() {
            if step.layers != num_layers || step.heads != num_heads {
                return None;
            }
            let n = step.kv_len.min(s);
            for lh in 0..num_layers * num_heads {
                let src = &step.data[lh * step.kv_len..lh * step.kv_len + n];
                let dst = (t * num_layers * num_heads + lh) * s;
                out[dst..dst + n].copy_from_slice(src);
            }
        }
        Some((vec![t_len, num_layers, num_heads, s], out))
    }

    /// `[H, S, S]` of one decoder layer, assembled from every recorded block of query rows
    /// (prefill block, then one row per decode step); zeros where nothing was recorded (above
    /// the diagonal, and rows never computed).
    pub fn full(&self, layer: usize, total_positions: usize) -> Option<(Vec<usize>, Vec<f32>)> {
        let blocks = self.full.get(&layer)?;
        let heads = blocks.first()?.heads;
        let s = total_positions;
        let mut out = vec![0f32; heads * s * s];
        for b in blocks {
            if b.heads != heads {
                return None;
            }
            let n = b.kv_len.min(s);
            for h in 0..heads {
                for i in 0..b.q_len {
                    let row = b.q_offset + i;
                    if row >= s {
                        continue;
                    }
                    let src = (h * b.q_len + i) * b.kv_len;
                    let dst = (h * s + row) * s;
                    out[dst..dst + n].copy_from_slice(&b.data[src..src + n]);
                }
            }
        }
        Some((vec![heads, s, s], out))
    }

    /// Decoder layers with full matrices recorded.
    pub fn full_layers(&self) -> Vec<usize> {
        self.full.keys().copied().collect()
    }

    /// `[Lv, Hv, P+1, P+1]`: the vision tower layers that ran (up to the feature layer).
    pub fn vision(&self) -> Option<(Vec<usize>, Vec<f32>)> {
        let first = self.vision.values().next()?;
        let (heads, n) = (first.heads, first.q_len);
        let layers = self.vision.len();
        let mut out = Vec::with_capacity(layers * heads * n * n);
        for (i, (l, b)) in self.vision.iter().enumerate() {
            if *l != i || b.heads != heads || b.q_len != n || b.kv_len != n {
                return None;
            }
            out.extend_from_slice(&b.data);
        }
        Some((vec![layers, heads, n, n], out))
    }
}

impl Tape for AttentionRecorder {
    fn allows_batch(&self) -> bool {
        self.mode.is_off()
    }

    fn observes(&self, site: Site) -> bool {
        match site.tower {
            Tower::Text => self.wants_text(site.layer),
            Tower::Vision => self.wants_vision(),
        }
    }

    fn wants_received_only(&self, site: Site) -> bool {
        site.tower == Tower::Vision
            && self.vision_rows == Some(VisionRowKind::Received)
            && !self.mode.vision
    }

    fn received(&mut self, site: Site, rows: &Tensor) -> Result<()> {
        if site.tower == Tower::Vision && self.vision_rows.is_some() {
            self.store_view_rows(site.layer, &rows.to_dtype(DType::F32)?)?;
        }
        Ok(())
    }

    fn probs(&mut self, site: Site, probs: Tensor, q_offset: usize) -> Result<Tensor> {
        match site.tower {
            Tower::Text if self.wants_text(site.layer) => {
                self.record_text(site.layer, &probs, q_offset)?
            }
            Tower::Vision if self.wants_vision() => self.record_vision(site.layer, &probs)?,
            _ => {}
        }
        Ok(probs)
    }

    fn end_forward(&mut self) -> Result<()> {
        self.flush_rows()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probs(h: usize, q: usize, kv: usize, base: f32) -> Tensor {
        let data: Vec<f32> = (0..h * q * kv).map(|i| base + i as f32).collect();
        Tensor::from_vec(data, (1, h, q, kv), &Device::Cpu).unwrap()
    }

    #[test]
    fn rows_and_full_assemble() {
        let mut mode = CaptureMode::default_for(2).with_last_layer(2);
        mode.vision = false;
        let mut rec = AttentionRecorder::new(mode);
        // prefill of 3 positions, two layers, two heads
        rec.record_text(0, &probs(2, 3, 3, 0.0), 0).unwrap();
        rec.record_text(1, &probs(2, 3, 3, 100.0), 0).unwrap();
        rec.flush_rows().unwrap();
        // one decode step at position 3
        rec.record_text(0, &probs(2, 1, 4, 1000.0), 3).unwrap();
        rec.record_text(1, &probs(2, 1, 4, 2000.0), 3).unwrap();
        rec.flush_rows().unwrap();
        let (shape, rows) = rec.generated_rows(2, 2, 4).unwrap();
        assert_eq!(shape, vec![2, 2, 2, 4]);
        // t=0, layer 0, head 0: last row of the 3x3 block = [6, 7, 8], padded
        assert_eq!(&rows[0..4], &[6.0, 7.0, 8.0, 0.0]);
        // t=0, layer 1, head 1: 100 + 9 + 6..
        assert_eq!(&rows[12..16], &[115.0, 116.0, 117.0, 0.0]);
        // t=1, layer 1, head 0
        assert_eq!(&rows[16 + 8..16 + 12], &[2000.0, 2001.0, 2002.0, 2003.0]);
        let (shape, full) = rec.full(1, 4).unwrap();
        assert_eq!(shape, vec![2, 4, 4]);
        assert_eq!(&full[0..4], &[100.0, 101.0, 102.0, 0.0]);
        assert_eq!(&full[12..16], &[2000.0, 2001.0, 2002.0, 2003.0]);
        assert!(rec.full(0, 4).is_none());
        assert!(rec.vision().is_none());
    }

    #[test]
    fn view_rows_per_view() {
        let mut rec = AttentionRecorder::off().keep_vision_rows(VisionRowKind::Class);
        assert!(rec.wants_vision());
        // two views, one head, 3 tokens (class token first), two layers
        for layer in 0..2 {
            rec.record_vision(
                layer,
                &probs(1, 2 * 3, 3, 100.0 * layer as f32)
                    .reshape((2, 1, 3, 3))
                    .unwrap(),
            )
            .unwrap();
        }
        let views = rec.view_rows().unwrap();
        assert_eq!(views.len(), 2);
        assert_eq!(views[0].0, vec![2, 1, 2]);
        // view 1, layer 0: its class row is values 9, 10, 11; the class column dropped
        assert_eq!(views[1].1, vec![10.0, 11.0, 110.0, 111.0]);
        assert!(rec.vision().is_none());

        let mut rec = AttentionRecorder::off().keep_vision_rows(VisionRowKind::Received);
        rec.record_vision(0, &probs(1, 2, 2, 0.0).reshape((1, 1, 2, 2)).unwrap())
            .unwrap();
        assert_eq!(rec.view_rows().unwrap()[0].1, vec![1.0, 2.0]);
    }

    #[test]
    fn received_rows_may_come_window_by_window() {
        let vision = Site::vision(0);
        let rec = AttentionRecorder::off().keep_vision_rows(VisionRowKind::Received);
        assert!(rec.wants_received_only(vision));
        assert!(!rec.wants_received_only(Site::text(0)));
        let class = AttentionRecorder::off().keep_vision_rows(VisionRowKind::Class);
        assert!(!class.wants_received_only(vision));
        let full = AttentionRecorder::new(CaptureMode {
            vision: true,
            ..CaptureMode::off()
        })
        .keep_vision_rows(VisionRowKind::Received);
        assert!(!full.wants_received_only(vision));

        // Rows handed over already reduced are kept as they are, layer 0 starting afresh.
        let mut rec = rec;
        let rows = |v: f32| Tensor::new(&[[[v, 1.0 - v]]], &Device::Cpu).unwrap();
        rec.received(vision, &rows(0.25)).unwrap();
        rec.received(Site::vision(1), &rows(0.5)).unwrap();
        assert_eq!(rec.view_rows().unwrap()[0].1, vec![0.25, 0.75, 0.5, 0.5]);
        rec.received(vision, &rows(0.0)).unwrap();
        assert_eq!(rec.view_rows().unwrap()[0], (vec![1, 1, 2], vec![0.0, 1.0]));
    }

    #[test]
    fn off_records_nothing() {
        let mut rec = AttentionRecorder::off();
        assert!(!rec.wants_text(0));
        rec.record_text(0, &probs(1, 2, 2, 0.0), 0).unwrap();
        rec.flush_rows().unwrap();
        rec.record_vision(0, &probs(1, 2, 2, 0.0)).unwrap();
        assert!(rec.generated_rows(1, 1, 2).is_none());
        assert!(rec.vision().is_none());
    }
}
