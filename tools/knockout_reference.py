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

Qwen2-VL (tiny-qwen2-vl) and LLaVA-NeXT / OneVision (tiny-llava-next, tiny-llava-onevision) run
through the one-pass forwards of tools/qwen_vl_common.py (M-RoPE positions from transformers'
get_rope_index) and tools/anyres_relevancy.py (transformers' pack_image_features with the
image_newline rows), with the same mask hook on the decoder layers. Their cases name an image
region: patches and maps count that region's cells (`base`, `highres`, `image`), or every
region's cells in input order (`null`); an anyres `image` key set is the whole image span, the
newline rows included. Their lens maps cover every region's cells in input order.

Run: python tools/knockout_reference.py   (transformers 5, torch, safetensors)
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import LlavaForConditionalGeneration

sys.path.insert(0, str(Path(__file__).resolve().parent))
import anyres_relevancy as ar  # noqa: E402
import make_anyres_fixtures as ma  # noqa: E402
import make_qwen_vl_fixtures as mq  # noqa: E402
import qwen_vl_common as qc  # noqa: E402

FIX = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
MODELS = ["tiny-llava-gqa", "tiny-llava-qwen2-siglip", "tiny-llava-gemma", "tiny-llava-mistral"]
QWEN_MODELS = ["tiny-qwen2-vl"]
ANYRES_MODELS = ["tiny-llava-next", "tiny-llava-onevision"]
MARKERS = {"\u2581", "\u0120", "\u010a"}


def image_span(ref: dict) -> list[int]:
    """[start, len] of the image tokens (an anyres reference keeps it with its wide image)."""
    return ref["image_span"] if "image_span" in ref else ref["wide"]["image_span"]


def question_positions(ref: dict) -> list[int]:
    start, length = image_span(ref)
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


@contextlib.contextmanager
def blocked(model, layers=None, queries=(), keys=()):
    """Inside: queries→keys blocked in the decoder layers `layers` (inclusive; None: nothing)."""
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
            yield
    finally:
        for h in handles:
            h.remove()


def run(model, ids, pixel_values, layers=None, queries=(), keys=()):
    """Logits [S, vocab] of one forward, with queries→keys blocked in `layers` (inclusive)."""
    with blocked(model, layers, queries, keys):
        out = model(input_ids=ids[None], pixel_values=pixel_values[None])
    return out.logits[0]


def lens(model, ids, pixel_values, t_pos, patch_pos, layer, forward=None):
    outs = []
    lm = model.model.language_model
    handles = [layer_mod.register_forward_hook(
        lambda m, a, o: outs.append((o[0] if isinstance(o, tuple) else o)[0].detach()))
        for layer_mod in lm.layers]
    try:
        with torch.no_grad():
            if forward is None:
                model(input_ids=ids[None], pixel_values=pixel_values[None])
            else:
                forward(ids)
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
    for name in QWEN_MODELS + ANYRES_MODELS:
        pipeline_cases(name, results)
    out = FIX / "reference" / "knockout.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


def regions_of(name: str, ref: dict) -> dict:
    """Input positions of each region's cells (row-major, newline rows left out)."""
    if name in QWEN_MODELS:
        start, length = ref["image_span"]
        return {"image": list(range(start, start + length))}
    wide = ref["wide"]
    start, length = wide["image_span"]
    base = ref["base_features"]
    newlines = set(wide["image_newline_positions"])
    return {"base": list(range(start, start + base)),
            "highres": [p for p in range(start + base, start + length) if p not in newlines]}


def cells_of(regions: dict, region) -> list[int]:
    if region is None:
        return [p for cells in regions.values() for p in cells]
    return regions[region]


def pipeline_keys(block: str, ref: dict, rel: dict, t: int, regions: dict, region) -> list[int]:
    if block == "image":
        start, length = image_span(ref)
        return list(range(start, start + length))
    if block == "question":
        return question_positions(ref)
    cells = cells_of(regions, region)
    if block.startswith("patches:"):
        out = []
        for part in block[len("patches:"):].split(","):
            a, _, b = part.partition("-")
            out += list(range(int(a), int(b or a) + 1))
        return [cells[i] for i in sorted(set(out))]
    if block.startswith("map:relevancy.decoder:"):
        pct = float(block.rsplit(":", 1)[1])
        n = len(cells)
        row = [rel["relevancy_llm"][t][p].item() for p in cells]
        k = max(1, min(n, math.ceil(pct / 100 * n)))
        order = sorted(range(n), key=lambda i: (-row[i], i))
        return sorted(cells[i] for i in order[:k])
    raise SystemExit(f"unknown block {block}")


def pipeline_cases(name: str, results: dict) -> None:
    """Knockout cases and lens readings of a Qwen2-VL or LLaVA-NeXT / OneVision fixture."""
    ref = json.loads((FIX / "reference" / f"{name}.json").read_text())
    tensors = load_file(FIX / "reference" / f"{name}.safetensors")
    rel = load_file(FIX / "reference" / f"{name}.relevancy.safetensors")
    qwen = name in QWEN_MODELS
    spec = (mq if qwen else ma).SPECS[name]
    model = (mq if qwen else ma).model_class(spec).from_pretrained(
        str(FIX / name), attn_implementation="eager", dtype=torch.float32).eval()
    input_ids, output_ids = tensors["input_ids"], tensors["output_ids"]
    n = input_ids.shape[0]

    def forward(ids):
        if qwen:
            return qc.forward(model, ids, tensors["pixel_values"], tensors["image_grid_thw"], n)["logits"]
        return ar.forward(model, ids, tensors["pixel_values"], tensors["image_sizes"], n)[0]

    last = model.config.text_config.num_hidden_layers - 1
    regions = regions_of(name, ref)
    if qwen:
        cases = [
            (0, "image", "answer", (0, last), None),
            (1, "question", "answer", (0, min(1, last)), None),
            (2, "patches:0,1,5-7", "answer", (1, 1), None),
            (0, "image", "last-question", (0, last), None),
            (1, "map:relevancy.decoder:25", "answer", (0, last), None),
        ]
    else:
        cases = [
            (0, "image", "answer", (0, last), None),
            (1, "question", "answer", (0, min(1, last)), None),
            (2, "patches:0,1,5-7", "answer", (1, 1), "highres"),
            (3, "patches:14-18", "answer", (0, last), None),
            (0, "image", "last-question", (0, last), None),
            (1, "map:relevancy.decoder:25", "answer", (0, last), "highres"),
            (4, "map:relevancy.decoder:20", "answer", (0, last), "base"),
        ]
    for t, block, query, layers, region in cases:
        ids = torch.cat([input_ids, output_ids[:t]])
        q = n - 1 + t
        queries = [q] if query == "answer" else [question_positions(ref)[-1]]
        keys = pipeline_keys(block, ref, rel, t, regions, region)
        with blocked(model):
            plain = forward(ids)[-1]
        with blocked(model, layers, queries, keys):
            knocked = forward(ids)[-1]
        target = int(output_ids[t])
        results["cases"].append({
            "model": name, "token": t, "block": block, "query": query, "region": region,
            "layers": list(layers), "queries": queries, "keys": keys,
            "p_original": plain.softmax(-1)[target].item(),
            "p_knockout": knocked.softmax(-1)[target].item(),
            "greedy_original": int(plain.argmax()), "greedy_knockout": int(knocked.argmax()),
        })
    for t, layer in [(1, 0), (3, last)]:
        ids = torch.cat([input_ids, output_ids[:t]])
        cells = cells_of(regions, None)
        curve, patches = lens(model, ids, None, n - 1 + t, cells, layer, forward=forward)
        target = int(output_ids[t])
        results["lens"].append({
            "model": name, "token": t, "layer": layer,
            "curve": [c[target].item() for c in curve],
            "map": patches[:, target].tolist(),
            "top_ids": patches.argmax(-1).tolist(),
        })


if __name__ == "__main__":
    raise SystemExit(main())
