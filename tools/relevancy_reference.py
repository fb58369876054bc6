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
  relevancy_combined[t] = (u R_v)[1:], u = sum_j relevancy_llm[t][p_j] e_{v(j)}, p_j the input
      position of image feature j, v(j) its vision token (strategy default: j + 1; full: j)  -> [T, P]
LVLM-Interpret's formulas for the first output token (IntelLabs/lvlm-interpret, utils_relevancy.py,
construct_relevancy_map without normalisation), over a prefill-only forward of input_ids (S = N), with
the full matrices: R_i_i = I; R_i_i += avg_heads(A, G) @ R_i_i per decoder layer; the same over the
vision layers above from I (P+1 x P+1); its "all" map starts from the decoder's image block padded
with a leading CLS row/column (1 on the diagonal):
  lvlm_llm_first = R_i_i[-1]                                            -> [N]
  lvlm_vit_first = R_vit[0, 1:]                                         -> [P]
  lvlm_all_first = R_all[0, 1:] = R_vit[0, 1:] @ R_i_i[image, image]    -> [P]
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


def combined_row(model, ids: torch.Tensor, row: torch.Tensor, rv: torch.Tensor) -> torch.Tensor:
    """(u R_v)[1:] with u the decoder row over the image features placed at their vision tokens."""
    cfg = model.config
    pos = (ids == cfg.image_token_index).nonzero().flatten()
    u = torch.zeros(rv.shape[0], dtype=rv.dtype)
    offset = 1 if cfg.vision_feature_select_strategy == "default" else 0
    u[offset:offset + pos.shape[0]] = row[pos]
    return (u @ rv)[1:]


def lvlm_first(model, ref: dict, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """LVLM-Interpret's maps of the first output token, written after its utils_relevancy.py."""
    ids, out = ref["input_ids"], ref["output_ids"]
    logits, dec, vis = forward(model, ids, ref["pixel_values"].to(dtype))
    grads = torch.autograd.grad(logits[-1, out[0]], dec + vis)
    gd, gv = grads[: len(dec)], grads[len(dec):]

    def avg_heads(cam, grad):  # rule 5
        return (grad * cam).clamp(min=0).mean(dim=0)

    n = ids.shape[0]
    r = torch.eye(n, dtype=dtype)
    for a, g in zip(dec, gd):  # rule 6, handle_self_attention_image
        r += avg_heads(a.detach()[0], g[0]) @ r
    rv = torch.eye(vis[0].shape[-1], dtype=dtype)
    for a, g in zip(vis, gv):  # handle_self_attention_image_vit from the identity
        rv += avg_heads(a.detach()[0], g[0]) @ rv
    pos = (ids == model.config.image_token_index).nonzero().flatten()
    # patch features only (strategy full puts the CLS feature first)
    skip = 0 if model.config.vision_feature_select_strategy == "default" else 1
    start, p = int(pos[0]) + skip, rv.shape[0] - 1
    block = r[start:start + p, start:start + p]
    r_all = torch.zeros(p + 1, p + 1, dtype=dtype)
    r_all[0, 0] = 1
    r_all[1:, 1:] = block
    for a, g in zip(vis, gv):  # handle_self_attention_image_vit(R_i_i, ..., img_idx)
        r_all += avg_heads(a.detach()[0], g[0]) @ r_all
    return {"lvlm_llm_first": r[-1], "lvlm_vit_first": rv[0, 1:], "lvlm_all_first": r_all[0, 1:]}


def relevancy(model, ref: dict, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    model = model.to(dtype)
    ids, out = ref["input_ids"], ref["output_ids"]
    n, t = ids.shape[0], out.shape[0]
    seq = torch.cat([ids, out[:-1]])
    logits, dec, vis = forward(model, seq, ref["pixel_values"].to(dtype))
    rel_llm, rel_vit, rel_comb = [], [], []
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
        rel_comb.append(combined_row(model, seq, r[n - 1 + i], rv))
    return torch.stack(rel_llm), torch.stack(rel_vit), torch.stack(rel_comb), logits.detach()


def write_reference(name: str, model, relevancy_of, llm_first, script: str, extra=None,
                    record_diffs: bool = False) -> None:
    """Computes fixture `name`'s relevancy tables with `relevancy_of(model, ref, dtype)` (a dict
    of tables plus "logits") in float32 (checked against the reference logits) and float64
    (stored), adds LVLM-Interpret's first-token decoder row `llm_first(model, ref, dtype)` and
    whatever `extra(model, ref, tensors)` returns, writes `{name}.relevancy.safetensors`, prints
    the f32-vs-f64 differences and, with `record_diffs`, keeps them in `{name}.json`."""
    import json

    ref = load_file(str(FIX / "reference" / f"{name}.safetensors"))
    for p in model.parameters():
        p.requires_grad_(True)
    r32 = relevancy_of(model, ref, torch.float32)
    err = (r32.pop("logits") - ref["logits"]).abs().max().item()
    assert err < 1e-4, f"{name}: manual forward differs from the reference logits by {err}"
    r64 = relevancy_of(model, ref, torch.float64)
    r64.pop("logits")
    tensors = dict(r64)
    tensors["lvlm_llm_first"] = llm_first(model, ref, torch.float64)
    if extra is not None:
        tensors.update(extra(model, ref, tensors))
    n = ref["input_ids"].shape[0]
    d_first = (tensors["lvlm_llm_first"] - r64["relevancy_llm"][0, :n]).abs().max().item()
    save_file({k: v.float().contiguous() for k, v in sorted(tensors.items())},
              str(FIX / "reference" / f"{name}.relevancy.safetensors"),
              metadata={"definition": f"tools/{script}, computed in float64"})
    diffs = {k: (r32[k].double() - r64[k]).abs().max().item() for k in r64}
    print(f"{name}: " + ", ".join(f"{k} {list(v.shape)} max {v.max().item():.4g}"
                                  for k, v in sorted(tensors.items())))
    print("  f32 vs f64 max abs diff: " + ", ".join(f"{k} {v:.3g}" for k, v in sorted(diffs.items()))
          + f"; forward vs reference logits {err:.3g}; first-token prefill row vs ours {d_first:.3g}")
    if record_diffs:
        meta_path = FIX / "reference" / f"{name}.json"
        meta = json.loads(meta_path.read_text())
        meta["relevancy_f32_vs_f64_max_abs_diff"] = {k: float(f"{v:.3g}") for k, v in sorted(diffs.items())}
        meta_path.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")


def main() -> int:
    from transformers import LlavaForConditionalGeneration

    torch.manual_seed(0)
    for name in MODELS:
        ref = load_file(str(FIX / "reference" / f"{name}.safetensors"))
        model = LlavaForConditionalGeneration.from_pretrained(
            str(FIX / name), attn_implementation="eager", dtype=torch.float32).eval()
        for p in model.parameters():
            p.requires_grad_(True)
        llm32, vit32, comb32, logits32 = relevancy(model, ref, torch.float32)
        err = (logits32 - ref["logits"]).abs().max().item()
        assert err < 1e-4, f"{name}: manual forward differs from the reference logits by {err}"
        llm64, vit64, comb64, _ = relevancy(model, ref, torch.float64)
        lvlm = lvlm_first(model, ref, torch.float64)
        n = ref["input_ids"].shape[0]
        d_first = (lvlm["lvlm_llm_first"] - llm64[0, :n]).abs().max().item()
        tensors = {"relevancy_llm": llm64, "relevancy_vit": vit64, "relevancy_combined": comb64, **lvlm}
        save_file(
            {k: v.float().contiguous() for k, v in tensors.items()},
            str(FIX / "reference" / f"{name}.relevancy.safetensors"),
            metadata={"definition": "tools/relevancy_reference.py, computed in float64"},
        )
        d_llm = (llm32.double() - llm64).abs().max().item()
        d_vit = (vit32.double() - vit64).abs().max().item()
        d_comb = (comb32.double() - comb64).abs().max().item()
        print(f"{name}: relevancy_llm {list(llm64.shape)} max {llm64.max().item():.4g}, "
              f"relevancy_vit {list(vit64.shape)} max {vit64.max().item():.4g}; "
              f"f32 vs f64 max abs diff llm {d_llm:.3g} vit {d_vit:.3g} combined {d_comb:.3g} "
              f"(combined max {comb64.max().item():.4g}); forward vs reference logits {err:.3g}; "
              f"LVLM-Interpret first-token row vs ours {d_first:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
