#!/usr/bin/env python3
"""PyTorch-autograd relevancy references of the LLaVA-NeXT / LLaVA-OneVision fixtures.

Run by hand after tools/make_anyres_fixtures.py (nothing in the build or CI runs it):

    python tools/anyres_relevancy.py [--only NAME]   # tests/fixtures/reference/<name>.relevancy.safetensors

The definition is tools/family_relevancy.py's (Chefer et al. 2021, rules 5 and 6), with the vision
relevancy per tile: one eager forward over input_ids + output_ids[:-1]; the vision tower runs on the
1+K tiles (base view first) as one batch; transformers' pack_image_features (unpad, OneVision's
pooling, image_newline rows) builds the image features. For output token t, y = logit of
output_ids[t] at position N-1+t; per layer Abar = mean_h clamp(dy/dA * A, min=0), R <- R + Abar @ R
from I; the decoder over all its layers; each tile's vision R_v over the layers that feed the
projector. Stored keys (float64 computation, stored F32):

  relevancy_llm         [T, S]             row N-1+t of the decoder R
  relevancy_vit_matrix  [T, 1+K, Pv, Pv]   each tile's R_v (Pv = 17 with CLIP's CLS, 16 for SigLIP)
  relevancy_vit         [T, 1+K, Pf]       CLIP only: R_v[tile, 0, 1:] (CLS row over the patches)
  relevancy_combined    [T, 1+K, Pf]       u_tile R_v,tile; u = (relevancy_llm row at the image-token
                                           positions) @ packing (the reference's packing matrix: newline
                                           rows carry no vision token; a pooled feature passes its value
                                           back with its bilinear weights), placed at the tile's patch
                                           tokens (after the CLS for CLIP, which (u R_v)[1:] then drops)
  lvlm_llm_first        [N]                the first token's decoder row over a prefill-only forward
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_anyres_fixtures as ma  # noqa: E402
import relevancy_reference as rr  # noqa: E402

FIX = rr.FIX
MODELS = list(ma.SPECS)


def pack_kwargs(model) -> dict:
    if hasattr(model.config, "vision_aspect_ratio"):
        return {"vision_aspect_ratio": model.config.vision_aspect_ratio}
    return {"vision_feature_select_strategy": model.config.vision_feature_select_strategy}


def forward(model, seq: torch.Tensor, pv: torch.Tensor, sizes: torch.Tensor, n_prompt: int):
    """Logits [S,V], decoder attentions (per layer [1,H,S,S]), vision attentions of the layers that
    feed the projector (per layer [1+K,Hv,Pv,Pv]); all in the autograd graph."""
    cfg = model.config
    mm = model.model
    vout = mm.vision_tower(pv, output_attentions=True, output_hidden_states=True)
    layer = cfg.vision_feature_layer
    sel = vout.hidden_states[layer]
    if cfg.vision_feature_select_strategy == "default":
        sel = sel[:, 1:]
    proj = mm.multi_modal_projector(sel)
    packed, _ = mm.pack_image_features([proj], sizes, image_newline=mm.image_newline, **pack_kwargs(model))
    feats = packed[0]
    embeds = mm.get_input_embeddings()(seq[None]).clone()
    prompt = torch.arange(seq.shape[0]) < n_prompt
    pos = ((seq == cfg.image_token_index) & prompt).nonzero().flatten()
    assert pos.shape[0] == feats.shape[0], (pos.shape, feats.shape)
    embeds[0, pos] = feats.to(embeds.dtype)
    lm = mm.language_model(inputs_embeds=embeds, output_attentions=True)
    logits = model.lm_head(lm.last_hidden_state)[0]
    k = layer % len(vout.hidden_states)
    return logits, list(lm.attentions), list(vout.attentions[:k]), pos


def relevancy(model, ref: dict, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    model = model.to(dtype)
    ids, out, sizes = ref["input_ids"], ref["output_ids"], ref["image_sizes"]
    packing = ref["packing"].to(dtype)
    n, t = ids.shape[0], out.shape[0]
    seq = torch.cat([ids, out[:-1]])
    logits, dec, vis, pos = forward(model, seq, ref["pixel_values"].to(dtype), sizes, n)
    cls = model.config.vision_feature_select_strategy == "default"
    tiles, pv_tokens = vis[0].shape[0], vis[0].shape[-1]
    llm, vmat, vit, comb = [], [], [], []
    for i in range(t):
        y = logits[n - 1 + i, out[i]]
        grads = torch.autograd.grad(y, dec + vis, retain_graph=True, allow_unused=True)
        assert all(g is not None for g in grads), "an attention tensor is not on the gradient path"
        gd, gv = grads[: len(dec)], grads[len(dec):]
        r = rr.rollout([a.detach()[0] for a in dec], [g[0] for g in gd])
        row = r[n - 1 + i]
        u_feat = (row[pos] @ packing).reshape(tiles, -1)
        rvs, cs = [], []
        for k in range(tiles):
            rv = rr.rollout([a.detach()[k] for a in vis], [g[k] for g in gv])
            u = torch.zeros(pv_tokens, dtype=dtype)
            u[1 if cls else 0:] = u_feat[k]
            c = u @ rv
            rvs.append(rv)
            cs.append(c[1:] if cls else c)
        rvs = torch.stack(rvs)
        llm.append(row)
        vmat.append(rvs)
        comb.append(torch.stack(cs))
        if cls:
            vit.append(rvs[:, 0, 1:])
    res = {"relevancy_llm": torch.stack(llm), "relevancy_vit_matrix": torch.stack(vmat),
           "relevancy_combined": torch.stack(comb), "logits": logits.detach()}
    if cls:
        res["relevancy_vit"] = torch.stack(vit)
    return res


def lvlm_llm_first(model, ref: dict, dtype: torch.dtype) -> torch.Tensor:
    ids, out = ref["input_ids"], ref["output_ids"]
    logits, dec, _, _ = forward(model, ids, ref["pixel_values"].to(dtype), ref["image_sizes"], ids.shape[0])
    grads = torch.autograd.grad(logits[-1, out[0]], dec)
    return rr.rollout([a.detach()[0] for a in dec], [g[0] for g in grads])[-1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=MODELS, help="one model only")
    args = ap.parse_args()
    torch.manual_seed(0)
    for name in MODELS:
        if args.only not in (None, name):
            continue
        spec = ma.SPECS[name]
        model = ma.model_class(spec).from_pretrained(str(FIX / name), attn_implementation="eager",
                                                     dtype=torch.float32).eval()
        rr.write_reference(name, model, relevancy, lvlm_llm_first, "anyres_relevancy.py", record_diffs=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
