//! [`MapId`]: the one typed name of every map lvlmscope can show, with one spelling
//! ([`std::fmt::Display`] / [`std::str::FromStr`]) used in JSON, the app, `report --method`, the
//! `eval` tables and file names (docs/design.md, "The catalogue").
//!
//! Spellings (`l` a decoder layer, `h` a head):
//!
//! | id | map |
//! |---|---|
//! | `attention.last.mean` / `.max` / `.h{h}` | raw attention of the last layer, heads combined |
//! | `attention.layers.mean` / `.max` / `.h{h}` | the same, then the mean over every layer |
//! | `attention.l{l}.mean` / `.max` / `.h{h}` | raw attention of layer `l` |
//! | `attention.vision.last` / `.layers` / `.l{l}` then `.mean` / `.max` / `.h{h}` | the vision tower's own attention (layers of the tower), placed on the image |
//! | `attention.heads.l{l}h{h}+…` / `attention.heads.best` | mean attention of chosen heads; of the best localization heads ([`super::heads`]) |
//! | `relevancy.decoder` | decoder relevancy over the image (self-removed row) |
//! | `relevancy.decoder.residual` | the same row under LVLM-Interpret's residual normalisation |
//! | `relevancy.vision` | vision-tower relevancy |
//! | `relevancy.combined` | decoder relevancy carried through the vision tower |
//! | `causal` / `causal.max` / `causal.h{h}` | CLEANN image weights: sum over heads, max, one head |
//! | `lens.l{l}` | logit lens: each patch's probability of the answer token after layer `l` |
//! | `random` | a seeded uniform random map, the baseline |
//!
//! Parsing also takes the older spellings: the tensor names `relevancy.llm`, `relevancy.vit`
//! (and `relevancy.llm.residual`), `causal.sum`, and `attention.l{l}.head{h}`.

use std::fmt;
use std::str::FromStr;

use super::heads::{HeadSel, HeadSet};
use crate::explain::attention::HeadAgg;
use crate::explain::relevancy::views::Normalization;

/// The layers a raw-attention map reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layers {
    /// The last decoder layer.
    Last,
    /// The mean over every decoder layer.
    Mean,
    /// One decoder layer.
    At(usize),
}

/// The relevancy tables, named after the session's tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelevancySource {
    /// `relevancy.combined`: decoder relevancy carried through the vision tower (id
    /// `relevancy.combined`).
    Combined,
    /// `relevancy.vit`: vision-tower relevancy (id `relevancy.vision`).
    Vit,
    /// `relevancy.llm` over the image span: decoder relevancy (id `relevancy.decoder`).
    Llm,
}

impl RelevancySource {
    /// The next source (the app's `m` key): combined, vision, decoder.
    pub fn next(self) -> RelevancySource {
        match self {
            RelevancySource::Combined => RelevancySource::Vit,
            RelevancySource::Vit => RelevancySource::Llm,
            RelevancySource::Llm => RelevancySource::Combined,
        }
    }

    /// The session tensor the source reads.
    pub fn name(self) -> &'static str {
        match self {
            RelevancySource::Combined => "relevancy.combined",
            RelevancySource::Vit => "relevancy.vit",
            RelevancySource::Llm => "relevancy.llm",
        }
    }
}

/// How the heads of a causal result are combined into one map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CausalHeads {
    /// The image weights summed over heads (id `causal`).
    Sum,
    /// The largest image weight over heads (id `causal.max`).
    Max,
    /// One head's image weights (id `causal.h{h}`).
    Head(usize),
}

/// The families of maps, one per explanation method (the app's keys 1–3 choose among the
/// first three).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// Raw attention.
    Attention,
    /// Chefer relevancy.
    Relevancy,
    /// CLEANN causal explanation.
    Causal,
    /// The random baseline.
    Random,
    /// The logit lens.
    Lens,
}

impl Family {
    /// The family's name (`attention`, `relevancy`, `causal`, `random`).
    pub fn name(self) -> &'static str {
        match self {
            Family::Attention => "attention",
            Family::Relevancy => "relevancy",
            Family::Causal => "causal",
            Family::Random => "random",
            Family::Lens => "lens",
        }
    }
}

/// One map of the catalogue (see the module documentation for the spellings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MapId {
    /// Raw attention from the explained token's query to the image.
    Attention {
        /// Which layers.
        layers: Layers,
        /// How heads are combined.
        heads: HeadAgg,
    },
    /// Chefer relevancy over the image.
    Relevancy {
        /// Which table.
        source: RelevancySource,
        /// How a decoder row is prepared (always [`Normalization::SelfRemoved`] for the other
        /// sources, which have no query column).
        norm: Normalization,
    },
    /// The mean attention of a set of heads (localization heads).
    Heads(HeadSel),
    /// CLEANN image weights.
    Causal(CausalHeads),
    /// A uniform random map (seeded per request).
    Random,
    /// The logit lens at a decoder layer, read from the session's cache.
    Lens(usize),
    /// The vision tower's own attention (its layers and heads), placed on the image.
    Vision {
        /// Which vision layers.
        layers: Layers,
        /// How heads are combined.
        heads: HeadAgg,
    },
}

impl MapId {
    /// The maps every comparison holds when the session can give them, in the order of
    /// reports, `eval` tables and the faithfulness block.
    pub const STANDARD: [MapId; 8] = [
        MapId::Attention {
            layers: Layers::Last,
            heads: HeadAgg::Mean,
        },
        MapId::Attention {
            layers: Layers::Mean,
            heads: HeadAgg::Mean,
        },
        MapId::Attention {
            layers: Layers::Last,
            heads: HeadAgg::Max,
        },
        MapId::Relevancy {
            source: RelevancySource::Llm,
            norm: Normalization::SelfRemoved,
        },
        MapId::Relevancy {
            source: RelevancySource::Vit,
            norm: Normalization::SelfRemoved,
        },
        MapId::Relevancy {
            source: RelevancySource::Combined,
            norm: Normalization::SelfRemoved,
        },
        MapId::Causal(CausalHeads::Sum),
        MapId::Random,
    ];

    /// The raw attention of decoder layer `layer` of a model of `layers` layers, heads as
    /// `heads` says, under its canonical id: `attention.last.*` for the last layer's mean and
    /// max, `attention.l{layer}.*` otherwise.
    pub fn attention(layer: usize, layers: usize, heads: HeadAgg) -> MapId {
        let last = layer + 1 == layers;
        let layers = match heads {
            HeadAgg::Mean | HeadAgg::Max if last => Layers::Last,
            _ => Layers::At(layer),
        };
        MapId::Attention { layers, heads }
    }

    /// The relevancy map of `source`, decoder rows prepared as `norm` says.
    pub fn relevancy(source: RelevancySource, norm: Normalization) -> MapId {
        let norm = match source {
            RelevancySource::Llm => norm,
            _ => Normalization::SelfRemoved,
        };
        MapId::Relevancy { source, norm }
    }

    /// The map's family.
    pub fn family(&self) -> Family {
        match self {
            MapId::Attention { .. } | MapId::Heads(_) | MapId::Vision { .. } => Family::Attention,
            MapId::Relevancy { .. } => Family::Relevancy,
            MapId::Causal(_) => Family::Causal,
            MapId::Random => Family::Random,
            MapId::Lens(_) => Family::Lens,
        }
    }

    /// Whether the map is one of [`MapId::STANDARD`].
    pub fn is_standard(&self) -> bool {
        MapId::STANDARD.contains(self)
    }
}

fn heads_suffix(heads: HeadAgg) -> String {
    match heads {
        HeadAgg::Mean => "mean".into(),
        HeadAgg::Max => "max".into(),
        HeadAgg::Head(h) => format!("h{h}"),
    }
}

impl fmt::Display for MapId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let layers_name = |layers: Layers| match layers {
            Layers::Last => "last".to_string(),
            Layers::Mean => "layers".to_string(),
            Layers::At(l) => format!("l{l}"),
        };
        match *self {
            MapId::Attention { layers, heads } => {
                write!(
                    f,
                    "attention.{}.{}",
                    layers_name(layers),
                    heads_suffix(heads)
                )
            }
            MapId::Vision { layers, heads } => write!(
                f,
                "attention.vision.{}.{}",
                layers_name(layers),
                heads_suffix(heads)
            ),
            MapId::Relevancy { source, norm } => {
                let name = match source {
                    RelevancySource::Llm => "decoder",
                    RelevancySource::Vit => "vision",
                    RelevancySource::Combined => "combined",
                };
                write!(f, "relevancy.{name}")?;
                if source == RelevancySource::Llm && norm == Normalization::Residual {
                    write!(f, ".residual")?;
                }
                Ok(())
            }
            MapId::Heads(HeadSel::Best) => write!(f, "attention.heads.best"),
            MapId::Heads(HeadSel::Set(set)) => write!(f, "attention.heads.{set}"),
            MapId::Causal(CausalHeads::Sum) => write!(f, "causal"),
            MapId::Causal(CausalHeads::Max) => write!(f, "causal.max"),
            MapId::Causal(CausalHeads::Head(h)) => write!(f, "causal.h{h}"),
            MapId::Random => write!(f, "random"),
            MapId::Lens(l) => write!(f, "lens.l{l}"),
        }
    }
}

/// A string that names no map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown map {0:?} (for example attention.last.mean, attention.l2.h3, attention.vision.last.mean, attention.heads.best, relevancy.decoder, relevancy.combined, causal, causal.max, lens.l2, random)")]
pub struct MapIdError(pub String);

fn parse_heads(s: &str) -> Option<HeadAgg> {
    match s {
        "mean" => Some(HeadAgg::Mean),
        "max" => Some(HeadAgg::Max),
        _ => {
            let n = s.strip_prefix("head").or_else(|| s.strip_prefix('h'))?;
            n.parse().ok().map(HeadAgg::Head)
        }
    }
}

fn parse_layers(s: &str) -> Option<Layers> {
    match s {
        "last" => Some(Layers::Last),
        "layers" => Some(Layers::Mean),
        l => l.strip_prefix('l')?.parse().ok().map(Layers::At),
    }
}

impl FromStr for MapId {
    type Err = MapIdError;

    fn from_str(s: &str) -> Result<MapId, MapIdError> {
        let err = || MapIdError(s.to_string());
        let parts: Vec<&str> = s.trim().split('.').collect();
        let residual = Normalization::Residual;
        let plain = Normalization::SelfRemoved;
        let rel = |source| MapId::Relevancy {
            source,
            norm: plain,
        };
        Ok(match parts.as_slice() {
            ["attention", "heads", "best"] => MapId::Heads(HeadSel::Best),
            ["attention", "heads", set] => {
                MapId::Heads(HeadSel::Set(set.parse::<HeadSet>().map_err(|_| err())?))
            }
            ["attention", "vision", layers, heads] => MapId::Vision {
                layers: parse_layers(layers).ok_or_else(err)?,
                heads: parse_heads(heads).ok_or_else(err)?,
            },
            ["attention", layers, heads] => MapId::Attention {
                layers: parse_layers(layers).ok_or_else(err)?,
                heads: parse_heads(heads).ok_or_else(err)?,
            },
            ["relevancy", "decoder" | "llm"] => rel(RelevancySource::Llm),
            ["relevancy", "decoder" | "llm", "residual"] => MapId::Relevancy {
                source: RelevancySource::Llm,
                norm: residual,
            },
            ["relevancy", "vision" | "vit"] => rel(RelevancySource::Vit),
            ["relevancy", "combined"] => rel(RelevancySource::Combined),
            ["causal"] | ["causal", "sum"] => MapId::Causal(CausalHeads::Sum),
            ["causal", "max"] => MapId::Causal(CausalHeads::Max),
            ["causal", h] => match parse_heads(h) {
                Some(HeadAgg::Head(h)) => MapId::Causal(CausalHeads::Head(h)),
                _ => return Err(err()),
            },
            ["random"] => MapId::Random,
            ["lens", l] => MapId::Lens(
                l.strip_prefix('l')
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(err)?,
            ),
            _ => return Err(err()),
        })
    }
}

impl serde::Serialize for MapId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MapId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<MapId, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_round_trips() {
        let ids = [
            "attention.last.mean",
            "attention.last.max",
            "attention.last.h2",
            "attention.layers.mean",
            "attention.layers.h0",
            "attention.l0.mean",
            "attention.l3.max",
            "attention.l1.h7",
            "attention.heads.best",
            "attention.heads.l2h1+l0h3",
            "attention.vision.last.mean",
            "attention.vision.layers.max",
            "attention.vision.l1.h3",
            "relevancy.decoder",
            "relevancy.decoder.residual",
            "relevancy.vision",
            "relevancy.combined",
            "causal",
            "causal.max",
            "causal.h3",
            "random",
            "lens.l2",
        ];
        for s in ids {
            let id: MapId = s.parse().unwrap();
            assert_eq!(id.to_string(), s);
        }
        for id in MapId::STANDARD {
            assert_eq!(id.to_string().parse::<MapId>().unwrap(), id);
        }
    }

    #[test]
    fn old_spellings_parse_to_the_same_maps() {
        let same = [
            ("relevancy.vit", "relevancy.vision"),
            ("relevancy.llm", "relevancy.decoder"),
            ("relevancy.llm.residual", "relevancy.decoder.residual"),
            ("causal.sum", "causal"),
            ("attention.l2.head3", "attention.l2.h3"),
        ];
        for (old, new) in same {
            assert_eq!(old.parse::<MapId>().unwrap(), new.parse::<MapId>().unwrap());
        }
    }

    #[test]
    fn nonsense_is_refused_with_its_name() {
        for s in [
            "",
            "gradcam",
            "attention",
            "attention.lx.mean",
            "attention.l1.sum",
            "attention.heads.l2",
            "attention.heads.worst",
            "attention.vision.mean",
            "attention.vision.lx.mean",
            "attention.vision.last.sum",
            "relevancy.vision.residual",
            "causal.mean",
            "random.3",
            "lens",
            "lens.2",
        ] {
            let e = s.parse::<MapId>().unwrap_err();
            assert!(e.to_string().contains(&format!("{s:?}")), "{e}");
        }
    }

    #[test]
    fn attention_ids_are_canonical() {
        let last = MapId::attention(3, 4, HeadAgg::Mean);
        assert_eq!(last.to_string(), "attention.last.mean");
        assert_eq!(
            MapId::attention(3, 4, HeadAgg::Head(1)).to_string(),
            "attention.l3.h1"
        );
        assert_eq!(
            MapId::attention(1, 4, HeadAgg::Max).to_string(),
            "attention.l1.max"
        );
        let vision = MapId::relevancy(RelevancySource::Vit, Normalization::Residual);
        assert_eq!(vision.to_string(), "relevancy.vision");
    }
}
