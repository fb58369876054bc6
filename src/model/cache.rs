//! Key/value cache of the decoder.
//!
//! The first call on a layer (the prefill) keeps its keys and values as they are, so that a
//! single forward pass over a whole sequence stays one differentiable graph. Later calls write
//! into a buffer with spare room (grown by [`GROW`] positions at a time) instead of
//! concatenating, so a decode step does not copy the whole cache.

use candle_core::{Result, Tensor};

/// Spare positions added whenever a layer's buffer is (re)allocated.
pub const GROW: usize = 256;

/// One layer's keys and values: `k`, `v` are `[1, kv_heads, capacity, head_dim]`, the first
/// `len` positions valid.
#[derive(Debug, Clone)]
struct LayerCache {
    k: Tensor,
    v: Tensor,
    len: usize,
}

impl LayerCache {
    fn capacity(&self) -> Result<usize> {
        self.k.dim(2)
    }

    fn keys_values(&self) -> Result<(Tensor, Tensor)> {
        Ok((
            self.k.narrow(2, 0, self.len)?,
            self.v.narrow(2, 0, self.len)?,
        ))
    }
}

/// Keys and values of every decoder layer for the positions seen so far.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Option<LayerCache>>,
}

fn grown(old: &Tensor, len: usize, new_cap: usize) -> Result<Tensor> {
    let (b, h, _, d) = old.dims4()?;
    let buf = Tensor::zeros((b, h, new_cap, d), old.dtype(), old.device())?;
    buf.slice_set(&old.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
    Ok(buf)
}

impl KvCache {
    /// An empty cache for `num_layers` decoder layers.
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
        }
    }

    /// Forget every cached position.
    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = None);
    }

    /// Number of layers this cache was made for.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Number of cached positions (of the first layer).
    pub fn len(&self) -> usize {
        match self.layers.first() {
            Some(Some(l)) => l.len,
            _ => 0,
        }
    }

    /// Whether no position is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keep only the first `len` positions.
    pub fn truncate(&mut self, len: usize) {
        for layer in self.layers.iter_mut() {
            if len == 0 {
                *layer = None;
            } else if let Some(l) = layer.as_mut() {
                l.len = l.len.min(len);
            }
        }
    }

    /// Append `k`, `v` (`[1, kv_heads, t, head_dim]`) to layer `layer` and return the keys and
    /// values of all its positions.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let slot = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| candle_core::Error::Msg(format!("KV cache has no layer {layer}")))?;
        let n = k.dim(2)?;
        let Some(c) = slot.as_mut() else {
            let (k, v) = (k.contiguous()?, v.contiguous()?);
            *slot = Some(LayerCache {
                k: k.clone(),
                v: v.clone(),
                len: n,
            });
            return Ok((k, v));
        };
        if c.len + n > c.capacity()? {
            let cap = c.len + n + GROW;
            c.k = grown(&c.k, c.len, cap)?;
            c.v = grown(&c.v, c.len, cap)?;
        }
        c.k.slice_set(&k.contiguous()?, 2, c.len)?;
        c.v.slice_set(&v.contiguous()?, 2, c.len)?;
        c.len += n;
        c.keys_values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(vals: &[f32]) -> Tensor {
        Tensor::from_vec(vals.to_vec(), (1, 1, vals.len(), 1), &Device::Cpu).unwrap()
    }

    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn appends_grow_and_truncate() {
        let mut c = KvCache::new(1);
        assert!(c.is_empty());
        let (k, _) = c.append(0, &t(&[1.0, 2.0]), &t(&[-1.0, -2.0])).unwrap();
        assert_eq!(flat(&k), vec![1.0, 2.0]);
        let mut want = vec![1.0, 2.0];
        for i in 0..(GROW + 3) {
            let x = 3.0 + i as f32;
            want.push(x);
            let (k, v) = c.append(0, &t(&[x]), &t(&[-x])).unwrap();
            assert_eq!(flat(&k), want);
            assert_eq!(flat(&v), want.iter().map(|x| -x).collect::<Vec<_>>());
        }
        assert_eq!(c.len(), GROW + 5);
        c.truncate(3);
        assert_eq!(c.len(), 3);
        let (k, _) = c.append(0, &t(&[9.0]), &t(&[-9.0])).unwrap();
        assert_eq!(flat(&k), vec![1.0, 2.0, 3.0, 9.0]);
        c.clear();
        assert_eq!(c.len(), 0);
        assert!(c.append(1, &t(&[1.0]), &t(&[1.0])).is_err());
    }
}
