//! CLIP ViT vision tower, as used by LLaVA (transformers' `CLIPVisionModel`).
//!
//! Hidden state 0 is the embeddings after the pre-layernorm, hidden state k the output of
//! encoder layer k. Only the layers up to the highest hidden state LLaVA reads are loaded and
//! run; `post_layernorm` is never used by LLaVA and is not loaded.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear, VarBuilder};

use super::config::VisionConfig;
use super::ops::{self, Activation};
use super::recorder::AttentionRecorder;

/// LayerNorm with weight and bias (see [`ops::layer_norm`]).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub(super) weight: Tensor,
    pub(super) bias: Tensor,
    pub(super) eps: f64,
}

impl LayerNorm {
    /// Load `weight` and `bias` of size `size` from `vb`.
    pub fn load(vb: VarBuilder, size: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?,
            bias: vb.get(size, "bias")?,
            eps,
        })
    }

    /// Normalise the last dimension.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        ops::layer_norm(xs, &self.weight, &self.bias, self.eps)
    }
}

/// Patch embedding, class token and position embeddings.
#[derive(Debug, Clone)]
pub struct ClipEmbeddings {
    pub(super) patch_embedding: Conv2d,
    pub(super) class_embedding: Tensor,
    pub(super) position_embedding: Tensor,
    pub(super) image_size: usize,
}

impl ClipEmbeddings {
    /// Load from `vb` (prefix `embeddings`).
    pub fn load(vb: VarBuilder, cfg: &VisionConfig) -> Result<Self> {
        let conv_cfg = Conv2dConfig {
            stride: cfg.patch_size,
            ..Default::default()
        };
        let patch_embedding = candle_nn::conv2d_no_bias(
            cfg.num_channels,
            cfg.hidden_size,
            cfg.patch_size,
            conv_cfg,
            vb.pp("patch_embedding"),
        )?;
        let class_embedding = vb.get(cfg.hidden_size, "class_embedding")?;
        let position_embedding = vb.get(
            (cfg.num_patches() + 1, cfg.hidden_size),
            "position_embedding.weight",
        )?;
        Ok(Self {
            patch_embedding,
            class_embedding,
            position_embedding,
            image_size: cfg.image_size,
        })
    }

    /// `pixel_values` `[B, C, h, w]` in the model dtype → `[B, P + 1, hidden]`.
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let (b, _, h, w) = pixel_values.dims4()?;
        if h != self.image_size || w != self.image_size {
            candle_core::bail!(
                "the image is {h}x{w} pixels but the vision tower takes {0}x{0}",
                self.image_size
            );
        }
        let patches = self
            .patch_embedding
            .forward(pixel_values)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let hidden = self.class_embedding.dim(0)?;
        let class = self
            .class_embedding
            .reshape((1, 1, hidden))?
            .broadcast_as((b, 1, hidden))?
            .contiguous()?;
        let xs = Tensor::cat(&[&class, &patches], 1)?;
        xs.broadcast_add(&self.position_embedding.unsqueeze(0)?)
    }
}

/// Multi-head self-attention of one encoder layer.
#[derive(Debug, Clone)]
pub struct ClipAttention {
    pub(super) q_proj: Linear,
    pub(super) k_proj: Linear,
    pub(super) v_proj: Linear,
    pub(super) out_proj: Linear,
    pub(super) num_heads: usize,
    pub(super) head_dim: usize,
    pub(super) scale: f64,
}

impl ClipAttention {
    /// Load from `vb` (prefix `self_attn`).
    pub fn load(vb: VarBuilder, cfg: &VisionConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            q_proj: candle_nn::linear(h, h, vb.pp("q_proj"))?,
            k_proj: candle_nn::linear(h, h, vb.pp("k_proj"))?,
            v_proj: candle_nn::linear(h, h, vb.pp("v_proj"))?,
            out_proj: candle_nn::linear(h, h, vb.pp("out_proj"))?,
            num_heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim(),
            scale: (cfg.head_dim() as f64).powf(-0.5),
        })
    }

    fn heads(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, n, _) = xs.dims3()?;
        xs.reshape((b, n, self.num_heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// `xs` `[1, n, hidden]`; the probabilities go to `rec` as vision layer `layer`.
    pub fn forward(
        &self,
        xs: &Tensor,
        layer: usize,
        rec: &mut AttentionRecorder,
    ) -> Result<Tensor> {
        let (b, n, hidden) = xs.dims3()?;
        let q = self.heads(&self.q_proj.forward(xs)?)?;
        let k = self.heads(&self.k_proj.forward(xs)?)?;
        let v = self.heads(&self.v_proj.forward(xs)?)?;
        let scores = (q.matmul(&k.t()?)? * self.scale)?;
        let probs = ops::softmax_f32(&scores)?;
        if rec.wants_vision() {
            rec.record_vision(layer, &probs)?;
        }
        let out = probs.to_dtype(v.dtype())?.matmul(&v)?;
        let out = out.transpose(1, 2)?.reshape((b, n, hidden))?;
        self.out_proj.forward(&out)
    }
}

/// fc1 → activation → fc2.
#[derive(Debug, Clone)]
pub struct ClipMlp {
    pub(super) fc1: Linear,
    pub(super) fc2: Linear,
    pub(super) act: Activation,
}

impl ClipMlp {
    /// Load from `vb` (prefix `mlp`).
    pub fn load(vb: VarBuilder, cfg: &VisionConfig) -> Result<Self> {
        Ok(Self {
            fc1: candle_nn::linear(cfg.hidden_size, cfg.intermediate_size, vb.pp("fc1"))?,
            fc2: candle_nn::linear(cfg.intermediate_size, cfg.hidden_size, vb.pp("fc2"))?,
            act: cfg.hidden_act,
        })
    }

    /// Apply the MLP.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.act.forward(&self.fc1.forward(xs)?)?)
    }
}

/// One pre-norm transformer encoder layer.
#[derive(Debug, Clone)]
pub struct ClipEncoderLayer {
    pub(super) layer_norm1: LayerNorm,
    pub(super) self_attn: ClipAttention,
    pub(super) layer_norm2: LayerNorm,
    pub(super) mlp: ClipMlp,
    pub(super) index: usize,
}

impl ClipEncoderLayer {
    /// Load layer `index` from `vb` (prefix `encoder.layers.{index}`).
    pub fn load(vb: VarBuilder, cfg: &VisionConfig, index: usize) -> Result<Self> {
        let eps = cfg.layer_norm_eps;
        Ok(Self {
            layer_norm1: LayerNorm::load(vb.pp("layer_norm1"), cfg.hidden_size, eps)?,
            self_attn: ClipAttention::load(vb.pp("self_attn"), cfg)?,
            layer_norm2: LayerNorm::load(vb.pp("layer_norm2"), cfg.hidden_size, eps)?,
            mlp: ClipMlp::load(vb.pp("mlp"), cfg)?,
            index,
        })
    }

    /// Apply the layer.
    pub fn forward(&self, xs: &Tensor, rec: &mut AttentionRecorder) -> Result<Tensor> {
        let h = self
            .self_attn
            .forward(&self.layer_norm1.forward(xs)?, self.index, rec)?;
        let xs = (xs + h)?;
        let h = self.mlp.forward(&self.layer_norm2.forward(&xs)?)?;
        xs + h
    }
}

/// The vision transformer, loaded up to the last layer LLaVA reads.
#[derive(Debug, Clone)]
pub struct ClipVisionTower {
    pub(super) embeddings: ClipEmbeddings,
    pub(super) pre_layrnorm: LayerNorm,
    pub(super) layers: Vec<ClipEncoderLayer>,
    pub(super) dtype: DType,
}

impl ClipVisionTower {
    /// Load the embeddings, the pre-layernorm and encoder layers `0..num_layers` from `vb`
    /// (prefix `...vision_model`).
    pub fn load(vb: VarBuilder, cfg: &VisionConfig, num_layers: usize) -> Result<Self> {
        let embeddings = ClipEmbeddings::load(vb.pp("embeddings"), cfg)?;
        let pre_layrnorm =
            LayerNorm::load(vb.pp("pre_layrnorm"), cfg.hidden_size, cfg.layer_norm_eps)?;
        let vb_l = vb.pp("encoder").pp("layers");
        let layers = (0..num_layers)
            .map(|i| ClipEncoderLayer::load(vb_l.pp(i), cfg, i))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embeddings,
            pre_layrnorm,
            layers,
            dtype: vb.dtype(),
        })
    }

    /// Number of encoder layers loaded (and run).
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Run the tower and return the hidden states named in `wanted` (indices into
    /// `[embeddings, layer 1, ..., layer L]`), each `[1, P + 1, hidden]`, in the order given.
    pub fn forward(
        &self,
        pixel_values: &Tensor,
        wanted: &[usize],
        rec: &mut AttentionRecorder,
    ) -> Result<Vec<Tensor>> {
        let last = wanted.iter().copied().max().unwrap_or(0);
        if last > self.layers.len() {
            candle_core::bail!(
                "hidden state {last} asked for but only {} vision layers are loaded",
                self.layers.len()
            );
        }
        let pixel_values = pixel_values.to_dtype(self.dtype)?;
        let mut xs = self
            .pre_layrnorm
            .forward(&self.embeddings.forward(&pixel_values)?)?;
        let mut states = vec![None; last + 1];
        if wanted.contains(&0) {
            states[0] = Some(xs.clone());
        }
        for (i, layer) in self.layers.iter().take(last).enumerate() {
            xs = layer.forward(&xs, rec)?;
            if wanted.contains(&(i + 1)) {
                states[i + 1] = Some(xs.clone());
            }
        }
        wanted
            .iter()
            .map(|&i| {
                states[i]
                    .clone()
                    .ok_or_else(|| candle_core::Error::Msg(format!("hidden state {i} missing")))
            })
            .collect()
    }
}
