#!/usr/bin/env python3
"""PyTorch-autograd relevancy references of the family fixtures (tools/make_family_fixtures.py).

Run by hand after tools/make_family_fixtures.py (nothing in the build or CI runs it):

    python tools/family_relevancy.py [--only NAME]   # tests/fixtures/reference/<name>.relevancy.safetensors

The definition is tools/relevancy_reference.py's (Chefer et al. 2021, rules 5 and 6): one eager
forward over input_ids + output_ids[:-1]; for output token t, y = logit of output_ids[t] at
position N-1+t; per layer Abar = mean_h clamp(dy/dA * A, min=0), R <- R + Abar @ R from I;
the decoder over all its layers, the vision tower over the layers that feed the projector.
Image features go to the image-token positions of the PROMPT only (a generated image-token id is
an ordinary token, as in transformers' generate). Stored keys (float64 computation, stored F32):

  relevancy_llm         [T, S]       row N-1+t of the decoder R
  relevancy_vit_matrix  [T, Pv, Pv]  the whole vision R_v per output token (Pv = P+1 with CLS, P without)
  relevancy_vit         [T, P]       CLIP only: R_v[0, 1:] (CLS row over the patches)
  relevancy_combined    [T, P]       u R_v, u = relevancy_llm row over the image features placed at
                                     their vision tokens (CLIP default: feature j -> token j+1, CLIP
                                     full: j -> j; SigLIP: j -> j); CLIP keeps (u R_v)[1:], SigLIP
                                     all of u R_v (no CLS token to drop)
  lvlm_llm_first        [N]          LVLM-Interpret's decoder row of the first token (prefill only)
  lvlm_vit_first, lvlm_all_first [P] CLIP only, as tools/relevancy_reference.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import relevancy_reference as rr  # noqa: E402

FIX = rr.FIX
MODELS = ["tiny-llava-gemma", "tiny-llava-mistral", "tiny-llava-qwen2-siglip", "tiny-llava-imgtok"]


def has_cls(model) -> bool:
    return model.config.vision_config.model_type == "clip_vision_model"


def image_positions(model, ids: torch.Tensor, n_prompt: int) -> torch.Tensor:
    prompt = torch.arange(ids.shape[0]) < n_prompt
    return ((ids == model.config.image_token_index) & prompt).nonzero().flatten()


def forward(model, ids: torch.Tensor, pixel_values: torch.Tensor, n_prompt: int):
    """LLaVA forward with every attention tensor in the autograd graph.

    Returns (logits [S,V], decoder attentions [1,H,S,S] per layer, vision attentions [1,Hv,Pv,Pv]
    of the layers that feed the projector).
    """
    cfg = model.config
    vout = model.model.vision_tower(pixel_values[None], output_attentions=True, output_hidden_states=True)
    layer = cfg.vision_feature_layer
    hidden = vout.hidden_states[layer]
    if cfg.vision_feature_select_strategy == "default":
        hidden = hidden[:, 1:]
    feats = model.model.multi_modal_projector(hidden).reshape(-1, cfg.text_config.hidden_size)
    embeds = model.model.get_input_embeddings()(ids[None]).clone()
    pos = image_positions(model, ids, n_prompt)
    assert pos.shape[0] == feats.shape[0], (pos.shape, feats.shape)
    embeds[0, pos] = feats.to(embeds.dtype)
    lm = model.model.language_model(inputs_embeds=embeds, output_attentions=True)
    logits = model.lm_head(lm.last_hidden_state)[0]
    k = layer if layer >= 0 else len(vout.hidden_states) + layer
    return logits, list(lm.attentions), list(vout.attentions[:k])


def vision_u(model, ids: torch.Tensor, n_prompt: int, row: torch.Tensor, size: int) -> torch.Tensor:
    """The decoder row over the image features, placed at their vision tokens."""
    pos = image_positions(model, ids, n_prompt)
    offset = 1 if model.config.vision_feature_select_strategy == "default" else 0
    u = torch.zeros(size, dtype=row.dtype)
    u[offset:offset + pos.shape[0]] = row[pos]
    return u


def relevancy(model, ref: dict, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    model = model.to(dtype)
    ids, out = ref["input_ids"], ref["output_ids"]
    n, t = ids.shape[0], out.shape[0]
    seq = torch.cat([ids, out[:-1]])
    logits, dec, vis = forward(model, seq, ref["pixel_values"].to(dtype), n)
    cls = has_cls(model)
    llm, vmat, vit, comb = [], [], [], []
    for i in range(t):
        y = logits[n - 1 + i, out[i]]
        grads = torch.autograd.grad(y, dec + vis, retain_graph=True, allow_unused=True)
        assert all(g is not None for g in grads), "an attention tensor is not on the gradient path"
        gd, gv = grads[: len(dec)], grads[len(dec):]
        r = rr.rollout([a.detach()[0] for a in dec], [g[0] for g in gd])
        rv = rr.rollout([a.detach()[0] for a in vis], [g[0] for g in gv])
        row = r[n - 1 + i]
        llm.append(row)
        vmat.append(rv)
        u = vision_u(model, seq, n, row, rv.shape[0])
        if cls:
            vit.append(rv[0, 1:])
            comb.append((u @ rv)[1:])
        else:
            comb.append(u @ rv)
    res = {"relevancy_llm": torch.stack(llm), "relevancy_vit_matrix": torch.stack(vmat),
           "relevancy_combined": torch.stack(comb), "logits": logits.detach()}
    if cls:
        res["relevancy_vit"] = torch.stack(vit)
    return res


def lvlm_llm_first(model, ref: dict, dtype: torch.dtype) -> torch.Tensor:
    """LVLM-Interpret's decoder row of the first output token over a prefill-only forward."""
    ids, out = ref["input_ids"], ref["output_ids"]
    logits, dec, _ = forward(model, ids, ref["pixel_values"].to(dtype), ids.shape[0])
    grads = torch.autograd.grad(logits[-1, out[0]], dec)
    r = rr.rollout([a.detach()[0] for a in dec], [g[0] for g in grads])
    return r[-1]


def cls_first_rows(model, ref: dict, tensors: dict) -> dict:
    """LVLM-Interpret's vision and combined first-token rows, for a tower with a CLS token (its
    decoder row checked against ours)."""
    if not has_cls(model):
        return {}
    lv = rr.lvlm_first(model, ref, torch.float64)
    d = (lv["lvlm_llm_first"] - tensors["lvlm_llm_first"]).abs().max().item()
    assert d < 1e-9, f"lvlm_llm_first differs from relevancy_reference.py's by {d}"
    return {"lvlm_vit_first": lv["lvlm_vit_first"], "lvlm_all_first": lv["lvlm_all_first"]}


def main() -> int:
    from transformers import LlavaForConditionalGeneration

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=MODELS, help="one model only")
    args = ap.parse_args()
    torch.manual_seed(0)
    for name in MODELS:
        if args.only not in (None, name):
            continue
        model = LlavaForConditionalGeneration.from_pretrained(
            str(FIX / name), attn_implementation="eager", dtype=torch.float32).eval()
        rr.write_reference(name, model, relevancy, lvlm_llm_first, "family_relevancy.py",
                           extra=cls_first_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
