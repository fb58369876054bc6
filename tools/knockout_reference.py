"""transformers reference of attention knockout and the logit lens on the fixtures.

Writes tests/fixtures/reference/knockout.json (checked by tests/knockout_reference.rs).

Knockout: the session of each fixture (input ids, output ids, pixel values of
tests/fixtures/reference/<model>.*) is run once over `input_ids + output_ids[:t]` with
transformers' eager attention; in the chosen decoder layers a forward pre-hook on `self_attn`
adds -inf to the additive attention mask at (query row, key column) for every blocked pair, so
the softmax renormalises over the keys left. The probability of `output_ids[t]` at the last
position and the greedy id are recorded with and without the block.

Key sets are built here from their definitions, independently of lvlmscope: `image` (the image
span), `question` (the input tokens after the image whose non-space characters, word markers
read as spaces, spell the prompt), `patches:LIST` (image span, CLS skipped with strategy
`full`), `map:relevancy.decoder:PCT` (top ceil(PCT% * P) patches of the autograd reference's
decoder relevancy row, ties by lowest index).

Logit lens: hidden states after each decoder layer (the last one taken before the final norm,
through a hook on the last layer) read out through the final norm and the LM head.

Run: python tools/knockout_reference.py   (transformers 5, torch, safetensors)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import LlavaForConditionalGeneration

FIX = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
MODELS = ["tiny-llava-gqa", "tiny-llava-qwen2-siglip", "tiny-llava-gemma", "tiny-llava-mistral"]
MARKERS = {"\u2581", "\u0120", "\u010a"}


def question_positions(ref: dict) -> list[int]:
    start, length = ref["image_span"]
    n = ref["N"]
    chars = []
    for p in range(start + length, n):
        piece = ref["input_tokens"][p]
        if piece.startswith("<") and piece.endswith(">"):
            continue
        chars += [(c, p) for c in piece if not c.isspace() and c not in MARKERS]
    want = [c for c in ref["prompt"] if not c.isspace()]
    for s in range(len(chars) - len(want) + 1):
        if all(chars[s + i][0] == w for i, w in enumerate(want)):
            out = []
            for _, p in chars[s:s + len(want)]:
                if not out or out[-1] != p:
                    out.append(p)
            return out
    raise SystemExit("prompt not found")


def patch_start(ref: dict, grid: int) -> int:
    start, length = ref["image_span"]
    return start + (length - grid)


def keys_of(block: str, ref: dict, rel: dict, t: int, grid: int) -> list[int]:
    start, length = ref["image_span"]
    first = patch_start(ref, grid)
    if block == "image":
        return list(range(start, start + length))
    if block == "question":
        return question_positions(ref)
    if block.startswith("patches:"):
        out = []
        for part in block[len("patches:"):].split(","):
            a, _, b = part.partition("-")
            out += list(range(int(a), int(b or a) + 1))
        return [first + i for i in sorted(set(out))]
    if block.startswith("map:relevancy.decoder:"):
        pct = float(block.rsplit(":", 1)[1])
        row = rel["relevancy_llm"][t][first:first + grid].tolist()
        k = max(1, min(grid, math.ceil(pct / 100 * grid)))
        order = sorted(range(grid), key=lambda i: (-row[i], i))
        return sorted(first + i for i in order[:k])
    raise SystemExit(f"unknown block {block}")


def run(model, ids, pixel_values, layers=None, queries=(), keys=()):
    """Logits [S, vocab] of one forward, with queries→keys blocked in `layers` (inclusive)."""
    handles = []
    if layers is not None:
        def hook(module, args, kwargs):
            mask = kwargs.get("attention_mask")
            q = kwargs["hidden_states"].shape[1]
            if mask is None:
                mask = torch.full((q, q), float("-inf")).triu(1)[None, None]
            mask = mask.clone()
            for p in queries:
                for k in keys:
                    mask[..., p, k] = float("-inf")
            kwargs["attention_mask"] = mask
            return args, kwargs

        lm_layers = model.model.language_model.layers
        for li in range(layers[0], layers[1] + 1):
            handles.append(lm_layers[li].self_attn.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        with torch.no_grad():
            out = model(input_ids=ids[None], pixel_values=pixel_values[None])
    finally:
        for h in handles:
            h.remove()
    return out.logits[0]


def lens(model, ids, pixel_values, t_pos, patch_pos, layer):
    outs = []
    lm = model.model.language_model
    handles = [layer_mod.register_forward_hook(
        lambda m, a, o: outs.append((o[0] if isinstance(o, tuple) else o)[0].detach()))
        for layer_mod in lm.layers]
    try:
        with torch.no_grad():
            model(input_ids=ids[None], pixel_values=pixel_values[None])
    finally:
        for h in handles:
            h.remove()
    head = model.lm_head
    curve = []
    for hs in outs:
        logits = head(lm.norm(hs[t_pos]))
        curve.append(logits.softmax(-1))
    logits = head(lm.norm(outs[layer][patch_pos]))
    return curve, logits.softmax(-1)


def main() -> int:
    results = {"note": "made by tools/knockout_reference.py (transformers eager attention)",
               "cases": [], "lens": []}
    for name in MODELS:
        ref = json.loads((FIX / "reference" / f"{name}.json").read_text())
        tensors = load_file(FIX / "reference" / f"{name}.safetensors")
        rel = load_file(FIX / "reference" / f"{name}.relevancy.safetensors")
        model = LlavaForConditionalGeneration.from_pretrained(
            str(FIX / name), attn_implementation="eager", dtype=torch.float32).eval()
        n_layers = model.config.text_config.num_hidden_layers
        side = model.config.vision_config.image_size // model.config.vision_config.patch_size
        grid = side * side
        input_ids = tensors["input_ids"]
        output_ids = tensors["output_ids"]
        pixel_values = tensors["pixel_values"]
        n = input_ids.shape[0]
        last = n_layers - 1
        cases = [
            (0, "image", "answer", (0, last)),
            (1, "question", "answer", (0, min(1, last))),
            (2, "patches:0,1,5-7", "answer", (1, 1)),
            (0, "image", "last-question", (0, last)),
            (1, "map:relevancy.decoder:25", "answer", (0, last)),
        ]
        for t, block, query, layers in cases:
            ids = torch.cat([input_ids, output_ids[:t]])
            q = n - 1 + t
            queries = [q] if query == "answer" else [question_positions(ref)[-1]]
            keys = keys_of(block, ref, rel, t, grid)
            plain = run(model, ids, pixel_values)[-1]
            blocked = run(model, ids, pixel_values, layers, queries, keys)[-1]
            target = int(output_ids[t])
            results["cases"].append({
                "model": name, "token": t, "block": block, "query": query,
                "layers": list(layers), "queries": queries, "keys": keys,
                "p_original": plain.softmax(-1)[target].item(),
                "p_knockout": blocked.softmax(-1)[target].item(),
                "greedy_original": int(plain.argmax()), "greedy_knockout": int(blocked.argmax()),
            })
        for t, layer in [(1, 0), (3, last)]:
            ids = torch.cat([input_ids, output_ids[:t]])
            first = patch_start(ref, grid)
            curve, patches = lens(model, ids, pixel_values, n - 1 + t,
                                  list(range(first, first + grid)), layer)
            target = int(output_ids[t])
            results["lens"].append({
                "model": name, "token": t, "layer": layer,
                "curve": [c[target].item() for c in curve],
                "map": patches[:, target].tolist(),
                "top_ids": patches.argmax(-1).tolist(),
            })
    out = FIX / "reference" / "knockout.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
