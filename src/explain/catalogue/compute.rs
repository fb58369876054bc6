//! The maps of the catalogue, family by family (definitions: docs/design.md, "Definitions").

use std::borrow::Cow;
use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::parts::{attention_part_sums, part_sums, value_part_sums, PartSums, TurnParts};
use super::{CatalogueError, CausalHeads, Explanation, Layers, MapId, RegionMap, RelevancySource};
use crate::explain::attention::{self as attn, Grid, HeadAgg};
use crate::explain::causal::{self, CausalParams};
use crate::explain::relevancy::views::{prepare_row, Normalization};
use crate::session::{Array, CausalToken, Session};

/// The map `id` of `tokens` (checked: not empty, every one an answer token).
pub(super) fn explain(
    s: &Session,
    tokens: &[usize],
    id: &MapId,
    compute_causal: bool,
    seed: u64,
) -> Result<Explanation, CatalogueError> {
    let mut out = match *id {
        MapId::Attention { layers, heads } => attention(s, tokens, layers, heads)?,
        MapId::Heads(sel) => super::heads::heads_map(s, tokens, sel.resolve(s)?, blank(s))?,
        MapId::Relevancy { source, norm } => relevancy(s, tokens, source, norm)?,
        MapId::Causal(heads) => causal_map(s, tokens, heads, compute_causal)?,
        MapId::Random => random(s, seed)?,
        MapId::Lens(layer) => super::lens::lens_map(s, tokens, layer, blank(s))?,
        MapId::Vision { layers, heads } => {
            super::vision::vision_map(s, tokens, layers, heads, blank(s))?
        }
    };
    out.id = *id;
    out.tokens = tokens.to_vec();
    Ok(out)
}

fn blank(s: &Session) -> Explanation {
    let [rows, cols] = s.manifest.model.image_grid;
    Explanation {
        id: MapId::Random,
        tokens: Vec::new(),
        title: String::new(),
        grid: Grid {
            rows,
            cols,
            values: Vec::new(),
        },
        regions: Vec::new(),
        text: BTreeMap::new(),
        layer: None,
        head: None,
        causal: None,
        parts: None,
    }
}

/// Input positions of every region's cells (region by region, each row-major); an error when
/// the session's image span holds positions but no region fits it.
pub(super) fn cells(s: &Session) -> Result<Vec<usize>, CatalogueError> {
    let cells = s.cell_positions();
    let [_, len] = s.manifest.image_span;
    if cells.is_empty() && len > 0 {
        let [rows, cols] = s.manifest.model.image_grid;
        return Err(attn::AttentionError::Grid(len, rows, cols).into());
    }
    Ok(cells)
}

/// Sets the map's values: `values` holds one per cell of every region, in [`cells`]' order.
pub(super) fn set_values(out: &mut Explanation, s: &Session, values: Vec<f32>) {
    let mut rest = values.as_slice();
    out.regions = s
        .regions()
        .iter()
        .map(|r| {
            let (mine, tail) = rest.split_at(r.cells().min(rest.len()));
            rest = tail;
            RegionMap {
                kind: r.kind,
                rect: r.rect,
                grid: Grid {
                    rows: r.grid[0],
                    cols: r.grid[1],
                    values: mine.to_vec(),
                },
            }
        })
        .collect();
    if let Some(first) = out.regions.first() {
        out.grid = first.grid.clone();
    }
}

/// `token t` or `mean of n tokens`.
pub fn tokens_label(tokens: &[usize]) -> String {
    match tokens {
        [t] => format!("token {t}"),
        _ => format!("mean of {} tokens", tokens.len()),
    }
}

fn heads_label(heads: HeadAgg) -> String {
    match heads {
        HeadAgg::Head(h) => format!("head {h}"),
        HeadAgg::Mean => "mean of heads".into(),
        HeadAgg::Max => "max of heads".into(),
    }
}

/// Adds `row / n` into `text` at every position up to `upto` outside the image span.
fn add_text(text: &mut BTreeMap<usize, f32>, s: &Session, row: &[f32], upto: usize, n: f32) {
    let image = s.image_range();
    for (p, v) in row.iter().enumerate().take(upto) {
        if !image.contains(&p) {
            *text.entry(p).or_insert(0.0) += v / n;
        }
    }
}

/// The last position whose value a map of `tokens` may hold, plus one.
fn text_end(s: &Session, tokens: &[usize]) -> usize {
    tokens
        .iter()
        .map(|&t| s.query_position(t) + 1)
        .max()
        .unwrap_or(0)
}

fn attention(
    s: &Session,
    tokens: &[usize],
    layers: Layers,
    heads: HeadAgg,
) -> Result<Explanation, CatalogueError> {
    let count = s.manifest.model.text_layers;
    let last = count.saturating_sub(1);
    let mut out = blank(s);
    let upto = text_end(s, tokens);
    let n = tokens.len() as f32;
    let cells = cells(s)?;
    let mut values = vec![0f32; cells.len()];
    let turn = TurnParts::of(s);
    let mut parts = PartSums::default();
    match layers {
        Layers::Last | Layers::At(_) => {
            let l = if let Layers::At(l) = layers { l } else { last };
            for &t in tokens {
                let row = attn::combined_row(s, t, l, heads)?;
                for (o, &p) in values.iter_mut().zip(&cells) {
                    *o += row[p] / n;
                }
                add_text(&mut out.text, s, &row, upto, n);
                let sums = attention_part_sums(&turn, &row, s.query_position(t));
                parts.add_scaled(&sums, 1.0 / n);
            }
            out.layer = Some(l);
            out.title = format!("attention · layer {l} · {}", heads_label(heads));
        }
        Layers::Mean => {
            let count = count.max(1);
            for &t in tokens {
                let mut one = vec![0f32; values.len()];
                for l in 0..count {
                    let row = attn::combined_row(s, t, l, heads)?;
                    for (o, &p) in one.iter_mut().zip(&cells) {
                        *o += row[p] / count as f32;
                    }
                    add_text(&mut out.text, s, &row, upto, n * count as f32);
                    let sums = attention_part_sums(&turn, &row, s.query_position(t));
                    parts.add_scaled(&sums, 1.0 / (n * count as f32));
                }
                values.iter_mut().zip(&one).for_each(|(o, v)| *o += v / n);
            }
            out.title = format!("attention · mean of layers · {}", heads_label(heads));
        }
    }
    set_values(&mut out, s, values);
    out.parts = Some(parts);
    out.head = match heads {
        HeadAgg::Head(h) => Some(h),
        _ => None,
    };
    out.title = format!("{} · {}", out.title, tokens_label(tokens));
    Ok(out)
}

/// The session's table of `source`.
pub(super) fn table(s: &Session, source: RelevancySource) -> Option<&Array> {
    match source {
        RelevancySource::Combined => s.relevancy_combined.as_ref(),
        RelevancySource::Vit => s.relevancy_vit.as_ref(),
        RelevancySource::Llm => s.relevancy_llm.as_ref(),
    }
}

fn relevancy(
    s: &Session,
    tokens: &[usize],
    source: RelevancySource,
    norm: Normalization,
) -> Result<Explanation, CatalogueError> {
    if let Some(&t) = tokens
        .iter()
        .find(|t| !s.manifest.relevancy_tokens.contains(t))
    {
        return Err(CatalogueError::NoRelevancy(t));
    }
    let a = table(s, source).ok_or(CatalogueError::NoTable(source.name()))?;
    // The decoder's rows are over positions; the vision tables over every region's cells.
    let columns = match source {
        RelevancySource::Llm => cells(s)?,
        _ => (0..cells(s)?.len()).collect(),
    };
    let needed = columns.iter().max().map_or(0, |&c| c + 1);
    let width = a.shape.get(1).copied().unwrap_or(0);
    if a.shape.len() != 2 || needed > width {
        return Err(CatalogueError::TableWidth {
            name: source.name(),
            width,
            needed,
        });
    }
    let mut out = blank(s);
    let n = tokens.len() as f32;
    let mut values = vec![0.0; columns.len()];
    let upto = text_end(s, tokens);
    let turn = TurnParts::of(s);
    let mut parts = Some(PartSums::default());
    for &t in tokens {
        if t >= a.shape[0] {
            return Err(CatalogueError::NoRelevancy(t));
        }
        let row: Cow<[f32]> = match source {
            RelevancySource::Llm => Cow::Owned(prepare_row(a.row(&[t]), s.query_position(t), norm)),
            _ => Cow::Borrowed(a.row(&[t])),
        };
        for (o, &c) in values.iter_mut().zip(&columns) {
            *o += row[c] / n;
        }
        let decoder = s.relevancy_llm.as_ref().filter(|l| t < l.shape[0]);
        match decoder {
            Some(l) => {
                let q = s.query_position(t);
                let prepared = prepare_row(l.row(&[t]), q, norm);
                add_text(&mut out.text, s, &prepared, upto, n);
                if let Some(p) = parts.as_mut() {
                    p.add_scaled(&part_sums(&turn, &prepared, q), 1.0 / n);
                }
            }
            None => parts = None,
        }
    }
    set_values(&mut out, s, values);
    out.parts = parts;
    let norm = match source {
        RelevancySource::Llm => format!(" · {}", norm.name()),
        _ => String::new(),
    };
    out.title = format!("{}{norm} · {}", source.name(), tokens_label(tokens));
    Ok(out)
}

fn causal_map(
    s: &Session,
    tokens: &[usize],
    heads: CausalHeads,
    compute: bool,
) -> Result<Explanation, CatalogueError> {
    let cells = cells(s)?;
    let index: BTreeMap<usize, usize> = cells.iter().enumerate().map(|(i, &p)| (p, i)).collect();
    let image = s.image_range();
    let mut out = blank(s);
    let n = tokens.len() as f32;
    let mut values = vec![0.0f32; cells.len()];
    for &t in tokens {
        let ct: Cow<CausalToken> = match causal::stored_token(s, t) {
            Some(ct) => Cow::Borrowed(ct),
            None if compute => Cow::Owned(causal::causal_for_token(s, t)?),
            None => return Err(CatalogueError::NoCausal(t)),
        };
        let chosen: Vec<_> = ct
            .heads
            .iter()
            .filter(|h| !matches!(heads, CausalHeads::Head(x) if x != h.head))
            .collect();
        let one: Vec<f32> = match heads {
            CausalHeads::Sum => {
                let mut total = vec![0f64; cells.len()];
                for h in &ct.heads {
                    for (&p, &w) in &h.image_weights {
                        if let Some(&i) = index.get(&p) {
                            total[i] += w;
                        }
                    }
                }
                total.into_iter().map(|w| w as f32).collect()
            }
            CausalHeads::Max | CausalHeads::Head(_) => {
                let mut one = vec![0.0f32; cells.len()];
                for h in &chosen {
                    for (&p, &w) in &h.image_weights {
                        if let Some(&i) = index.get(&p) {
                            one[i] = one[i].max(w as f32);
                        }
                    }
                }
                one
            }
        };
        values.iter_mut().zip(&one).for_each(|(o, v)| *o += v / n);
        let mut text: BTreeMap<usize, f32> = BTreeMap::new();
        for h in &chosen {
            for &p in h.explanation.iter().filter(|&&p| !image.contains(&p)) {
                if p != ct.target {
                    let v = text.entry(p).or_insert(0.0);
                    *v = v.max(h.importance as f32);
                }
            }
        }
        for (p, v) in text {
            *out.text.entry(p).or_insert(0.0) += v / n;
        }
        if out.causal.is_none() {
            out.causal = Some(ct.into_owned());
        }
    }
    let image_total = values.iter().sum();
    set_values(&mut out, s, values);
    out.parts = Some(value_part_sums(&TurnParts::of(s), image_total, &out.text));
    out.layer = Some(CausalParams::of_session(s).layer);
    out.head = match heads {
        CausalHeads::Head(h) => Some(h),
        _ => None,
    };
    let what = match heads {
        CausalHeads::Head(h) => format!("head {h}"),
        CausalHeads::Sum => "sum over heads".into(),
        CausalHeads::Max => "max of heads".into(),
    };
    out.title = format!("causal image weights · {} · {what}", tokens_label(tokens));
    Ok(out)
}

fn random(s: &Session, seed: u64) -> Result<Explanation, CatalogueError> {
    // The regions are checked against the input positions before they size the map.
    let cells = cells(s)?.len();
    let mut out = blank(s);
    let mut rng = StdRng::seed_from_u64(seed);
    set_values(&mut out, s, (0..cells).map(|_| rng.gen::<f32>()).collect());
    out.title = format!("random map · seed {seed}");
    Ok(out)
}
