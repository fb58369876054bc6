#!/usr/bin/env python3
"""PyTorch-autograd reference of Chefer relevancy for the tiny LLaVA fixtures.

Run by hand after tools/make_fixtures.py (nothing in the build or CI runs it):

    python tools/relevancy_reference.py      # writes tests/fixtures/reference/<model>.relevancy.safetensors

Definition (DESIGN.md, "Relevancy"; Chefer et al. 2021, rules 5 and 6):
  one forward (eager attention) over the S = N + T - 1 positions input_ids + output_ids[:-1];
  for each output token t, y = logit of output_ids[t] at position N-1+t;
  for each decoder layer l in order: A_l = attention probabilities [H,S,S], G_l = dy/dA_l,
      Abar_l = mean over heads of clamp(G_l * A_l, min=0),  R <- R + Abar_l @ R,  R starts as I (S x S);
  relevancy_llm[t] = row N-1+t of R                                     -> [T, S]
  the same over the vision-tower layers that feed the projector (layers 0 .. L_v + vision_feature_layer
  for a negative feature layer), with the gradient of the same y, R_v starts as I (P+1 x P+1);
  relevancy_vit[t] = R_v[0, 1:] (the CLS row, over the P patches)        -> [T, P]
Computed in float64 (weights and pixel values cast up) so that it is a clean reference; the
script prints how far a float32 computation lands from it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
MODELS = ["tiny-llava-gqa", "tiny-llava-full"]


def forward(model, ids: torch.Tensor, pixel_values: torch.Tensor):
    """LLaVA forward written out so that the vision attentions stay in the autograd graph.

    Returns (logits [S,V], decoder attentions list of [1,H,S,S], vision attentions list of
    [1,Hv,P+1,P+1] for the layers that feed the projector). The attention tensors are the very ones
    the model multiplied with the values (not views made afterwards), so gradients reach them.
    """
    cfg = model.config
    vt = model.model.vision_tower
    vout = vt(pixel_values[None], output_attentions=True, output_hidden_states=True)
    layer = cfg.vision_feature_layer
    hidden = vout.hidden_states[layer]
    if cfg.vision_feature_select_strategy == "default":
        hidden = hidden[:, 1:]
    feats = model.model.multi_modal_projector(hidden).reshape(-1, cfg.text_config.hidden_size)
    embeds = model.model.get_input_embeddings()(ids[None])
    mask = (ids == cfg.image_token_index)[None, :, None].expand_as(embeds)
    assert int(mask[0, :, 0].sum()) == feats.shape[0]
    embeds = embeds.masked_scatter(mask, feats.to(embeds.dtype))
    lm = model.model.language_model(inputs_embeds=embeds, output_attentions=True)
    logits = model.lm_head(lm.last_hidden_state)[0]
    # hidden_states[k] is the output of layer k-1 (k = 0: embeddings), so layers 0..k-1 feed it
    k = layer if layer >= 0 else len(vout.hidden_states) + layer
    vis = list(vout.attentions[:k])
    return logits, list(lm.attentions), vis


def rollout(attns: list[torch.Tensor], grads: list[torch.Tensor]) -> torch.Tensor:
    """R = I; for each layer: R += mean_h(clamp(G*A, 0)) @ R."""
    s = attns[0].shape[-1]
    r = torch.eye(s, dtype=attns[0].dtype)
    for a, g in zip(attns, grads):
        abar = (g * a).clamp(min=0).mean(0)
        r = r + abar @ r
    return r


def relevancy(model, ref: dict, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    model = model.to(dtype)
    ids, out = ref["input_ids"], ref["output_ids"]
    n, t = ids.shape[0], out.shape[0]
    seq = torch.cat([ids, out[:-1]])
    logits, dec, vis = forward(model, seq, ref["pixel_values"].to(dtype))
    rel_llm, rel_vit = [], []
    for i in range(t):
        y = logits[n - 1 + i, out[i]]
        grads = torch.autograd.grad(y, dec + vis, retain_graph=True, allow_unused=True)
        assert all(g is not None for g in grads), "an attention tensor is not on the gradient path"
        gd, gv = grads[: len(dec)], grads[len(dec):]
        gd = [torch.zeros_like(a) if g is None else g for a, g in zip(dec, gd)]
        gv = [torch.zeros_like(a) if g is None else g for a, g in zip(vis, gv)]
        r = rollout([a.detach()[0] for a in dec], [g[0] for g in gd])
        rel_llm.append(r[n - 1 + i])
        rv = rollout([a.detach()[0] for a in vis], [g[0] for g in gv])
        rel_vit.append(rv[0, 1:])
    return torch.stack(rel_llm), torch.stack(rel_vit), logits.detach()


def main() -> int:
    from transformers import LlavaForConditionalGeneration

    torch.manual_seed(0)
    for name in MODELS:
        ref = load_file(str(FIX / "reference" / f"{name}.safetensors"))
        model = LlavaForConditionalGeneration.from_pretrained(
            str(FIX / name), attn_implementation="eager", dtype=torch.float32).eval()
        for p in model.parameters():
            p.requires_grad_(True)
        llm32, vit32, logits32 = relevancy(model, ref, torch.float32)
        err = (logits32 - ref["logits"]).abs().max().item()
        assert err < 1e-4, f"{name}: manual forward differs from the reference logits by {err}"
        llm64, vit64, _ = relevancy(model, ref, torch.float64)
        save_file(
            {"relevancy_llm": llm64.float().contiguous(), "relevancy_vit": vit64.float().contiguous()},
            str(FIX / "reference" / f"{name}.relevancy.safetensors"),
            metadata={"definition": "tools/relevancy_reference.py, computed in float64"},
        )
        d_llm = (llm32.double() - llm64).abs().max().item()
        d_vit = (vit32.double() - vit64).abs().max().item()
        print(f"{name}: relevancy_llm {list(llm64.shape)} max {llm64.max().item():.4g}, "
              f"relevancy_vit {list(vit64.shape)} max {vit64.max().item():.4g}; "
              f"f32 vs f64 max abs diff llm {d_llm:.3g} vit {d_vit:.3g}; forward vs reference logits {err:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
