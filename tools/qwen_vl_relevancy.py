#!/usr/bin/env python3
"""PyTorch-autograd relevancy references of the Qwen2-VL / Qwen2.5-VL fixtures.

Run by hand after tools/make_qwen_vl_fixtures.py (nothing in the build or CI runs it):

    python tools/qwen_vl_relevancy.py [--only NAME]   # tests/fixtures/reference/<name>.relevancy.safetensors

The definition is tools/family_relevancy.py's (Chefer et al. 2021, rules 5 and 6): one eager
forward over input_ids + output_ids[:-1] (M-RoPE positions from get_rope_index); for output token
t, y = logit of output_ids[t] at position N-1+t; per layer Abar = mean_h clamp(dy/dA * A, min=0),
R <- R + Abar @ R from I; the decoder over all its layers, the vision tower over ALL its blocks
(the merger reads the last one). Vision attention is computed per chunk (the whole image, or one
window of Qwen2.5-VL); A and dy/dA are placed block-diagonally into P x P matrices in the
processor's patch order (zero across windows), so the rollout runs over the P patches.
Stored keys (float64 computation, stored F32):

  relevancy_llm         [T, S]       row N-1+t of the decoder R
  relevancy_vit_matrix  [T, P, P]    the whole vision R_v per output token (processor patch order)
  relevancy_combined    [T, P]       u R_v, u[p] = relevancy_llm row at the image-pad position of the
                                     merged token that patch p feeds (merged token j <- patches 4j..4j+3
                                     in processor order): the merged token's value copied to its 4
                                     patches, not divided
  lvlm_llm_first        [N]          the first token's decoder row over a prefill-only forward
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_qwen_vl_fixtures as mq  # noqa: E402
import qwen_vl_common as qc  # noqa: E402
import relevancy_reference as rr  # noqa: E402

FIX = rr.FIX
MODELS = list(mq.SPECS)


def attention_pairs(chunks_per_block, grads_per_block, perm):
    """Per block: (A [H,P,P], G [H,P,P]) assembled from the chunks."""
    return [(qc.assemble([c.detach() for c in cs], perm), qc.assemble(gs, perm))
            for cs, gs in zip(chunks_per_block, grads_per_block)]


def relevancy(model, ref: dict, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    model = model.to(dtype)
    ids, out = ref["input_ids"], ref["output_ids"]
    grid = ref["image_grid_thw"]
    n, t = ids.shape[0], out.shape[0]
    seq = torch.cat([ids, out[:-1]])
    fwd = qc.forward(model, seq, ref["pixel_values"].to(dtype), grid, n)
    assert torch.equal(fwd["position_ids"], ref["position_ids"]), "position ids differ from the reference"
    logits, dec, vchunks = fwd["logits"], fwd["dec"], fwd["vis_chunks"]
    flat = [c for cs in vchunks for c in cs]
    perm = qc.patch_permutation(model, grid)
    merge_unit = model.config.vision_config.spatial_merge_size ** 2
    img_pos = qc.mm_token_type_ids(model, seq, n).bool().nonzero().flatten()
    llm, vmat, comb = [], [], []
    for i in range(t):
        y = logits[n - 1 + i, out[i]]
        grads = torch.autograd.grad(y, dec + flat, retain_graph=True, allow_unused=True)
        assert all(g is not None for g in grads), "an attention tensor is not on the gradient path"
        gd, gv = grads[: len(dec)], list(grads[len(dec):])
        gblocks, k = [], 0
        for cs in vchunks:
            gblocks.append(gv[k:k + len(cs)])
            k += len(cs)
        r = rr.rollout([a.detach()[0] for a in dec], [g[0] for g in gd])
        pairs = attention_pairs(vchunks, gblocks, perm)
        rv = rr.rollout([a for a, _ in pairs], [g for _, g in pairs])
        row = r[n - 1 + i]
        u = row[img_pos].repeat_interleave(merge_unit)
        llm.append(row)
        vmat.append(rv)
        comb.append(u @ rv)
    return {"relevancy_llm": torch.stack(llm), "relevancy_vit_matrix": torch.stack(vmat),
            "relevancy_combined": torch.stack(comb), "logits": logits.detach()}


def lvlm_llm_first(model, ref: dict, dtype: torch.dtype) -> torch.Tensor:
    ids, out = ref["input_ids"], ref["output_ids"]
    fwd = qc.forward(model, ids, ref["pixel_values"].to(dtype), ref["image_grid_thw"], ids.shape[0])
    grads = torch.autograd.grad(fwd["logits"][-1, out[0]], fwd["dec"])
    return rr.rollout([a.detach()[0] for a in fwd["dec"]], [g[0] for g in grads])[-1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=MODELS, help="one model only")
    args = ap.parse_args()
    torch.manual_seed(0)
    for name in MODELS:
        if args.only not in (None, name):
            continue
        spec = mq.SPECS[name]
        model = mq.model_class(spec).from_pretrained(str(FIX / name), attn_implementation="eager",
                                                     dtype=torch.float32).eval()
        rr.write_reference(name, model, relevancy, lvlm_llm_first, "qwen_vl_relevancy.py", record_diffs=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
