#!/usr/bin/env python3
"""Make the tiny random-weight Qwen2-VL and Qwen2.5-VL fixtures and their transformers references.

Run by hand from the repository root after tools/make_fixtures.py (needs torch, transformers,
tokenizers, safetensors, pillow, numpy; nothing in the build or CI runs it):

    python tools/make_qwen_vl_fixtures.py [--only NAME]   # folders + reference/<name>.{json,safetensors}
    python tools/qwen_vl_relevancy.py [--only NAME]       # reference/<name>.relevancy.safetensors

Deterministic (fixed seeds). It writes:

  tests/fixtures/image_tall.png      30x64 RGB (tall; tests/fixtures/image.png is the wide 48x36 one)
  tests/fixtures/tiny-qwen2-vl/      Qwen2VLForConditionalGeneration as Qwen/Qwen2-VL-2B-Instruct is
                                     published: flat config.json (text fields at the top level,
                                     rope_scaling {"type": "mrope", "mrope_section"}), checkpoint key
                                     layout model.* / visual.* / (tied, no lm_head), vision depth 2,
                                     LayerNorm + quick_gelu MLP blocks
  tests/fixtures/tiny-qwen2_5-vl/    Qwen2_5_VLForConditionalGeneration as transformers 5 saves it:
                                     nested text_config with rope_parameters, keys model.language_model.*,
                                     model.visual.*, lm_head (untied); vision depth 3 with window
                                     attention in blocks 0 and 2 (fullatt_block_indexes [1]), 4 windows
                                     over the 3x4 merged grid, RMSNorm + SwiGLU blocks
  tests/fixtures/reference/<name>.json + <name>.safetensors
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import family_tokenizers as ft  # noqa: E402
import make_fixtures as mf  # noqa: E402
import qwen_vl_common as qc  # noqa: E402

FIX = mf.FIX
MIN_PIXELS = 3 * 56 * 56  # 9408: the 48x36 image is scaled up to 112x84 -> 8x6 patches -> 4x3 merged tokens
MAX_PIXELS = 16 * 28 * 28  # 12544
TEXT = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
            hidden_act="silu", max_position_embeddings=512, rms_norm_eps=1e-06, use_sliding_window=False,
            sliding_window=4096, max_window_layers=2)
MROPE_SECTION = [2, 3, 3]  # sums to head_dim / 2 = 8 (t, h, w frequency bands)
VISION_SCALES = dict(qk=10.0, v=8.0, patch=6.0, merger=3.0)

SPECS = {
    "tiny-qwen2-vl": dict(
        seed=36, arch="Qwen2VLForConditionalGeneration", model_type="qwen2_vl", tied=True, layers=2,
        scales=dict(embed=10.0, vo=6.0),
        vision=dict(depth=2, embed_dim=32, mlp_ratio=2, num_heads=4, in_chans=3, hidden_size=64, patch_size=14,
                    spatial_merge_size=2, temporal_patch_size=2, hidden_act="quick_gelu"),
    ),
    "tiny-qwen2_5-vl": dict(
        seed=35, arch="Qwen2_5_VLForConditionalGeneration", model_type="qwen2_5_vl", tied=False, layers=3,
        scales=dict(embed=6.0, vo=4.0), intermediate_size=96,
        vision=dict(depth=3, hidden_size=32, intermediate_size=48, num_heads=4, in_channels=3, out_hidden_size=64,
                    patch_size=14, spatial_merge_size=2, temporal_patch_size=2, hidden_act="silu",
                    window_size=56, fullatt_block_indexes=[1], tokens_per_second=2),
    ),
}


def make_tall_image() -> Image.Image:
    """30x64 RGB: a green triangle above an orange bar, on grey."""
    img = Image.new("RGB", (30, 64), (200, 205, 210))
    d = ImageDraw.Draw(img)
    d.polygon([(15, 4), (27, 28), (3, 28)], fill=(30, 160, 60))
    d.rectangle([5, 40, 24, 55], fill=(240, 140, 20))
    return img


def ids_of(tok) -> dict:
    return {t: tok.token_to_id(t) for t in qc.QWEN_VL_SPECIAL}


def config_flat(spec: dict, vocab: int, ids: dict) -> dict:
    """Qwen2-VL config.json in the published (4.4x) shape: text fields at the top level."""
    return {
        "architectures": [spec["arch"]],
        "model_type": spec["model_type"],
        **TEXT,
        "intermediate_size": spec.get("intermediate_size", TEXT["intermediate_size"]),
        "num_hidden_layers": spec["layers"],
        "rope_theta": 1000000.0,
        "rope_scaling": {"type": "mrope", "mrope_section": MROPE_SECTION},
        "tie_word_embeddings": spec["tied"],
        "vocab_size": vocab,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "vision_config": dict(spec["vision"]),
        "torch_dtype": "float32",
    }


def config_nested(spec: dict, vocab: int, ids: dict) -> dict:
    """Qwen2.5-VL config.json as transformers 5 writes it (text_config with rope_parameters)."""
    from transformers import AutoConfig

    flat = config_flat(spec, vocab, ids)
    flat.pop("rope_scaling")
    flat["rope_parameters"] = {"rope_type": "default", "rope_theta": flat.pop("rope_theta"),
                               "mrope_section": MROPE_SECTION}
    cfg = AutoConfig.for_model(spec["model_type"], **{k: v for k, v in flat.items() if k != "model_type"})
    d = cfg.to_diff_dict()
    d["architectures"] = [spec["arch"]]
    return d


def preprocessor_config() -> dict:
    return {
        "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": mf.CLIP_MEAN, "image_std": mf.CLIP_STD,
        "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2VLProcessor",
        "min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS, "merge_size": 2, "patch_size": 14,
        "temporal_patch_size": 2, "resample": 3, "rescale_factor": 0.00392156862745098,
    }


def write_folder(out: Path, spec: dict, tok) -> dict:
    ids = ids_of(tok)
    vocab = tok.get_vocab_size()
    cfg = config_flat(spec, vocab, ids) if spec["model_type"] == "qwen2_vl" else config_nested(spec, vocab, ids)
    mf.dump(out / "config.json", cfg)
    mf.dump(out / "generation_config.json", {"bos_token_id": ids["<|endoftext|>"],
                                             "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
                                             "pad_token_id": ids["<|endoftext|>"], "do_sample": False})
    mf.dump(out / "preprocessor_config.json", preprocessor_config())
    mf.dump(out / "chat_template.json", {"chat_template": qc.QWEN_VL_TEMPLATE})
    tok.save(str(out / "tokenizer.json"))
    mf.dump(out / "tokenizer_config.json", {
        "tokenizer_class": "Qwen2Tokenizer", "bos_token": None, "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>", "unk_token": None, "model_max_length": 512,
        "clean_up_tokenization_spaces": False, "padding_side": "left", "errors": "replace",
        "split_special_tokens": False,
        "additional_special_tokens": [t for t in qc.QWEN_VL_SPECIAL if t != "<|endoftext|>"],
        "added_tokens_decoder": ft.added_tokens_decoder(tok, qc.QWEN_VL_SPECIAL),
    })
    return ids


def sharpen_vision(model, seed: int) -> None:
    """Sharper vision attention and larger features (mf.sharpen does the decoder, norms and biases)."""
    g = torch.Generator().manual_seed(seed + 200)
    with torch.no_grad():
        for name, p in model.model.visual.named_parameters():
            if name.endswith("attn.qkv.weight"):
                d = p.shape[0] // 3
                p[: 2 * d].mul_(VISION_SCALES["qk"])
                p[2 * d:].mul_(VISION_SCALES["v"])
            elif name.endswith("attn.proj.weight"):
                p.mul_(VISION_SCALES["v"])
            elif name.endswith("patch_embed.proj.weight"):
                p.mul_(VISION_SCALES["patch"])
            elif name.startswith("merger.mlp") and name.endswith("weight"):
                p.mul_(VISION_SCALES["merger"])
            elif name.endswith("ln_q.weight"):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))


def to_published(key: str) -> str:
    """transformers-5 key -> the key layout of the published Qwen2-VL checkpoints."""
    if key.startswith("model.language_model."):
        return "model." + key[len("model.language_model."):]
    if key.startswith("model.visual."):
        return key[len("model."):]
    if key == "lm_head.weight":
        return key
    raise ValueError(f"unexpected key {key}")


def write_weights(model, out: Path, spec: dict) -> None:
    sd = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    if spec["tied"]:
        sd.pop("lm_head.weight", None)
    if spec["model_type"] == "qwen2_vl":
        sd = {to_published(k): v for k, v in sd.items()}
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})


def model_class(spec: dict):
    import transformers

    return getattr(transformers, spec["arch"])


def load_checked(out: Path, spec: dict, written: dict):
    model = model_class(spec).from_pretrained(str(out), attn_implementation="eager", dtype=torch.float32).eval()
    loaded = model.state_dict()
    assert set(loaded) == set(written), set(loaded) ^ set(written)
    for k, v in written.items():
        assert torch.equal(loaded[k], v), f"{k} did not round-trip"
    if spec["tied"]:
        assert torch.equal(model.lm_head.weight, model.model.language_model.embed_tokens.weight), "not tied"
    return model


def make_processor(out: Path):
    """Qwen2VLProcessor with the folder's tokenizer and the image processor AutoImageProcessor picks
    for preprocessor_config.json (the PIL backend where torchvision is absent); no video processor."""
    from transformers import AutoImageProcessor, PreTrainedTokenizerFast, Qwen2VLProcessor

    class ImageOnlyProcessor(Qwen2VLProcessor):
        def check_argument_for_proper_class(self, argument_name, argument):
            if argument_name == "video_processor" and argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(out))
    improc = AutoImageProcessor.from_pretrained(str(out))
    assert improc.size.shortest_edge == MIN_PIXELS and improc.size.longest_edge == MAX_PIXELS, improc.size
    return ImageOnlyProcessor(image_processor=improc, tokenizer=tokenizer, chat_template=qc.QWEN_VL_TEMPLATE)


def encode(processor, image: Image.Image) -> dict:
    """input_ids [N], pixel_values [P, 3*2*14*14], image_grid_thw [1,3], mm_token_type_ids [N]."""
    rendered = mf_render(processor)
    enc = processor(images=image, text=rendered, return_tensors="pt")
    msgs = messages()
    msgs[0]["content"][0]["image"] = image
    direct = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    assert torch.equal(direct["input_ids"], enc["input_ids"])
    assert torch.equal(direct["pixel_values"], enc["pixel_values"])
    return {"input_ids": enc["input_ids"][0], "pixel_values": enc["pixel_values"],
            "image_grid_thw": enc["image_grid_thw"], "mm_token_type_ids": enc["mm_token_type_ids"][0]}


def messages() -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": mf.PROMPT}]}]


def mf_render(processor) -> str:
    return processor.apply_chat_template(messages(), add_generation_prompt=True, tokenize=False)


@torch.no_grad()
def greedy(model, enc: dict) -> torch.Tensor:
    ids = enc["input_ids"]
    gen = model.generate(input_ids=ids[None], pixel_values=enc["pixel_values"], image_grid_thw=enc["image_grid_thw"],
                         mm_token_type_ids=enc["mm_token_type_ids"][None], attention_mask=torch.ones_like(ids)[None],
                         do_sample=False, max_new_tokens=mf.MAX_NEW_TOKENS, min_new_tokens=mf.MAX_NEW_TOKENS)
    return gen[0, ids.shape[0]:]


def patch_rc(grid_thw: torch.Tensor, merge: int) -> torch.Tensor:
    """[P,2] (row, col) in the patch grid of each processor patch (merge blocks are contiguous)."""
    _, gh, gw = grid_thw[0].tolist()
    r = torch.arange(gh).view(gh // merge, merge, 1, 1).expand(gh // merge, merge, gw // merge, merge)
    c = torch.arange(gw).view(1, 1, gw // merge, merge).expand(gh // merge, merge, gw // merge, merge)
    r, c = r.permute(0, 2, 1, 3).reshape(-1), c.permute(0, 2, 1, 3).reshape(-1)
    return torch.stack([r, c], 1)


@torch.no_grad()
def make_reference(name: str, spec: dict, model, processor, raw_tok, images: dict) -> None:
    cfg = model.config
    image_id = cfg.image_token_id
    enc = encode(processor, images["wide"])
    rendered = mf_render(processor)
    ids, pv, grid = enc["input_ids"], enc["pixel_values"], enc["image_grid_thw"]
    n_feat = int((ids == image_id).sum())
    raw = raw_tok.encode(rendered).ids
    expanded = []
    for t in raw:
        expanded.extend([t] * n_feat if t == image_id else [t])
    assert expanded == ids.tolist(), (expanded, ids.tolist())
    merge = cfg.vision_config.spatial_merge_size
    assert n_feat == int(grid.prod()) // merge ** 2

    out_ids = greedy(model, enc)
    assert not bool((out_ids == image_id).any()), "the answer contains the image-pad id"
    n, t = ids.shape[0], out_ids.shape[0]
    seq = torch.cat([ids, out_ids[:-1]])
    fwd = qc.forward(model, seq, pv, grid, n)
    logits = fwd["logits"]
    plain = model(input_ids=seq[None], pixel_values=pv, image_grid_thw=grid,
                  mm_token_type_ids=qc.mm_token_type_ids(model, seq, n)[None]).logits[0]
    assert float((plain - logits).abs().max()) < 1e-5, "manual forward differs from transformers' forward"
    argmax = logits[n - 1:].argmax(-1)
    assert torch.equal(argmax, out_ids), (argmax, out_ids)
    top2 = logits[n - 1:].topk(2, dim=-1).values
    min_margin = float((top2[:, 0] - top2[:, 1]).min())
    prefill_last = qc.forward(model, ids, pv, grid, n)["logits"][-1]

    perm = qc.patch_permutation(model, grid)
    vision_attn = torch.stack([qc.assemble(c, perm) for c in fwd["vis_chunks"]])
    chunk_sizes = [[c.shape[-1] for c in chunks] for chunks in fwd["vis_chunks"]]
    vlast = fwd["vision_last_hidden"]
    if perm is not None:
        vlast = torch.empty_like(vlast).index_copy_(0, perm, vlast)
    rc = patch_rc(grid, merge)

    tall = encode(processor, images["tall"])
    tall_out = greedy(model, tall)
    tall_seq = torch.cat([tall["input_ids"], tall_out[:-1]])
    tall_pos = qc.rope_index(model, tall_seq, tall["image_grid_thw"], tall["input_ids"].shape[0])

    tensors = {
        "input_ids": ids.to(torch.int64), "output_ids": out_ids.to(torch.int64),
        "pixel_values": pv.float(), "image_grid_thw": grid.to(torch.int64),
        "position_ids": fwd["position_ids"].to(torch.int64), "patch_rc": rc.to(torch.int64),
        "logits": logits.float(), "prefill_logits_last": prefill_last.float(),
        "attentions": torch.stack([a[0] for a in fwd["dec"]]).float(),
        "vision_attentions": vision_attn.float(), "vision_last_hidden": vlast.float(),
        "image_features": fwd["features"].float(),
        "tall_input_ids": tall["input_ids"].to(torch.int64), "tall_output_ids": tall_out.to(torch.int64),
        "tall_pixel_values": tall["pixel_values"].float(), "tall_image_grid_thw": tall["image_grid_thw"].to(torch.int64),
        "tall_position_ids": tall_pos.to(torch.int64),
    }
    if perm is not None:
        tensors["vision_patch_permutation"] = perm.to(torch.int64)
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    ref_dir = FIX / "reference"
    save_file(tensors, str(ref_dir / f"{name}.safetensors"))

    tok = processor.tokenizer
    vc = cfg.vision_config
    start = int((ids == image_id).nonzero()[0])
    improc = processor.image_processor
    meta = {
        "model": name,
        "family": {"decoder": cfg.text_config.model_type, "vision_tower": vc.model_type},
        "prompt": mf.PROMPT, "messages": messages(), "rendered_prompt": rendered,
        "image": "tests/fixtures/image.png", "image_size_wh": list(images["wide"].size),
        "min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS,
        "resized_hw": [int(grid[0, 1]) * vc.patch_size, int(grid[0, 2]) * vc.patch_size],
        "image_grid_thw": grid[0].tolist(),
        "merged_grid_hw": [int(grid[0, 1]) // merge, int(grid[0, 2]) // merge],
        "max_new_tokens": mf.MAX_NEW_TOKENS, "min_new_tokens": mf.MAX_NEW_TOKENS,
        "decoding": "greedy (do_sample=False); min_new_tokens = max_new_tokens, so EOS cannot end it early",
        "attn_implementation": "eager", "dtype": "float32",
        "N": n, "T": t, "S": n + t - 1,
        "image_span": [start, n_feat], "num_image_features": n_feat, "vision_patches": int(grid.prod()),
        "input_ids_unexpanded": raw, "input_ids": ids.tolist(), "output_ids": out_ids.tolist(),
        "input_tokens": tok.convert_ids_to_tokens(ids.tolist()),
        "output_tokens": tok.convert_ids_to_tokens(out_ids.tolist()),
        "output_text": tok.decode(out_ids.tolist(), skip_special_tokens=False),
        "output_text_skip_special": tok.decode(out_ids.tolist(), skip_special_tokens=True),
        "special_ids": ids_of(raw_tok),
        "image_token_id": image_id, "bos_prepended": False,
        "position_ids": fwd["position_ids"].tolist(),
        "rope_delta": int(fwd["position_ids"].max()) + 1 - (n + t - 1),
        "mrope_section": MROPE_SECTION,
        "vision_chunk_sizes_per_block": chunk_sizes,
        "pixel_backend": type(improc).__name__,
        "tall": {"image": "tests/fixtures/image_tall.png", "image_size_wh": list(images["tall"].size),
                 "image_grid_thw": tall["image_grid_thw"][0].tolist(),
                 "num_image_features": int((tall["input_ids"] == image_id).sum()),
                 "input_ids": tall["input_ids"].tolist(), "output_ids": tall_out.tolist(),
                 "position_ids": tall_pos.tolist()},
        "max_abs_hidden_state": max(float(h.abs().max()) for h in fwd["hidden_states"]),
        "max_abs_logit": float(logits.abs().max()),
        "min_top1_top2_logit_margin": min_margin,
        "tensors": {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)}
                    for k, v in tensors.items()},
        "notes": NOTES + (WINDOW_NOTES if perm is not None else []),
    }
    if perm is not None:
        meta["window_size"] = vc.window_size
        meta["fullatt_block_indexes"] = list(vc.fullatt_block_indexes)
        meta["vision_patch_permutation"] = perm.tolist()
    mf.dump(ref_dir / f"{name}.json", meta)
    print(f"{name}: N={n} T={t} grid={grid[0].tolist()} tall grid={tall['image_grid_thw'][0].tolist()} "
          f"out={meta['output_tokens']} margin={min_margin:.3f} max|logit|={meta['max_abs_logit']:.1f} "
          f"chunks={chunk_sizes}")


NOTES = [
    "logits/attentions come from ONE forward over input_ids + output_ids[:-1] (S positions); image features "
    "fill the <|image_pad|> positions of input_ids; position_ids [3,S] are transformers' get_rope_index over "
    "that sequence (prefill and decode positions together: text after the image continues from max+1).",
    "pixel_values [P, 3*2*14*14]: the processor's flattened patches; each row is (channel, temporal, py, px) "
    "with the still image repeated over the 2 temporal slots; rows are ordered by merge block "
    "(block row, block col, row in block, col in block): patch_rc gives each row's (row, col) in the patch grid.",
    "image_features [F, D]: the merger output (4 consecutive patches -> 1 token), in raster order over the "
    "merged grid (merged_grid_hw).",
    "vision_attentions [Lv,Hv,P,P]: all vision blocks, in processor patch order; full attention over the "
    "image's P patches (window blocks: zero outside each window).",
    "vision_last_hidden: the last block's output before the merger, [P, Dv], processor patch order.",
    "tall_*: the same prompt with tests/fixtures/image_tall.png (input ids, pixels, grid, greedy ids, positions). "
    "Its grid (12x6 patches = 168x84 px = 14112 px) is above max_pixels (12544): smart_resize scales a small "
    "image up to min_pixels with ceil and does not check max_pixels again.",
    "pixel_backend: the image processor class AutoImageProcessor gives here (PIL backend, no torchvision).",
]

WINDOW_NOTES = [
    "qwen2.5-vl window attention: the tower permutes the patches into window order (vision_patch_permutation: "
    "internal position i holds processor patch perm[i]); blocks not in fullatt_block_indexes attend within "
    "windows of window_size / patch_size / merge = 2x2 merged tokens (4x4 patches, fewer at the grid's "
    "bottom/right edge); the merger output is permuted back. vision_chunk_sizes_per_block: the windows' "
    "sizes in patches, per block, in window order.",
]


def make_model(name: str, spec: dict, images: dict) -> None:
    out = FIX / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    tok = qc.qwen_vl_tokenizer()
    write_folder(out, spec, tok)
    from transformers import AutoConfig

    torch.manual_seed(spec["seed"])
    config = AutoConfig.from_pretrained(str(out))
    config._attn_implementation = "eager"
    model = model_class(spec)(config).eval()
    mf.sharpen(model, spec["seed"], spec["scales"])
    sharpen_vision(model, spec["seed"])
    if spec["tied"]:
        model.tie_weights()
    write_weights(model, out, spec)
    written = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model = load_checked(out, spec, written)
    processor = make_processor(out)
    make_reference(name, spec, model, processor, tok, images)
    total = sum((out / f).stat().st_size for f in os.listdir(out))
    print(f"{name}: folder bytes {total}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=list(SPECS), help="make one model only")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    make_tall_image().save(FIX / "image_tall.png")
    images = {"wide": Image.open(FIX / "image.png").convert("RGB"),
              "tall": Image.open(FIX / "image_tall.png").convert("RGB")}
    for name, spec in SPECS.items():
        if args.only in (None, name):
            make_model(name, spec, images)
    return 0


if __name__ == "__main__":
    sys.exit(main())
