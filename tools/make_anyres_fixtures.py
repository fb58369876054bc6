#!/usr/bin/env python3
"""Make the tiny random-weight LLaVA-NeXT and LLaVA-OneVision fixtures and their transformers references.

Run by hand from the repository root after tools/make_qwen_vl_fixtures.py (which writes
tests/fixtures/image_tall.png); needs torch, transformers, tokenizers, safetensors, pillow:

    python tools/make_anyres_fixtures.py [--only NAME]   # folders + reference/<name>.{json,safetensors}
    python tools/anyres_relevancy.py [--only NAME]       # reference/<name>.relevancy.safetensors

Deterministic (fixed seeds). It writes:

  tests/fixtures/tiny-llava-next/       LlavaNextForConditionalGeneration (CLIP 32px/8px + LLaMA, as
                                        llava-hf/llava-v1.6-vicuna-7b-hf): image_grid_pinpoints
                                        [[32,32],[32,64],[64,32],[64,64]], layer -2, strategy default,
                                        LLaVA-1.5 "USER: <image>\\n... ASSISTANT:" template
  tests/fixtures/tiny-llava-onevision/  LlavaOnevisionForConditionalGeneration (SigLIP 32px/8px + Qwen2,
                                        as llava-hf/llava-onevision-qwen2-0.5b-ov-hf): pinpoints up to
                                        3x3 tiles, vision_aspect_ratio "anyres_max_1" (the anyres_max
                                        rule scaled down so that the bilinear pooling runs at this size),
                                        layer -1, strategy full, ChatML template
  tests/fixtures/reference/<name>.json + <name>.safetensors

Both are written in the LEGACY key layout of the published llava-hf checkpoints
(language_model.model.*, language_model.lm_head, vision_tower.vision_model.*, multi_modal_projector.*,
image_newline), one model.safetensors each.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import family_reference as fr  # noqa: E402
import family_tokenizers as ft  # noqa: E402
import make_family_fixtures as mff  # noqa: E402
import make_fixtures as mf  # noqa: E402

FIX = mf.FIX
NEXT_PINPOINTS = [[32, 32], [32, 64], [64, 32], [64, 64]]
OV_PINPOINTS = [[h, w] for h in (32, 64, 96) for w in (32, 64, 96)]

SPECS = {
    "tiny-llava-next": dict(
        seed=41, arch="LlavaNextForConditionalGeneration", model_type="llava_next", family="llama",
        processor="LlavaNextProcessor", improc="LlavaNextImageProcessor", tied=False,
        scales=dict(embed=10.0, vo=4.0),
        vision=dict(mff.CLIP_TINY, num_hidden_layers=3),
        text=dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  rms_norm_eps=1e-05, rope_theta=10000.0),
        vision_feature_layer=-2, strategy="default", pinpoints=NEXT_PINPOINTS,
    ),
    "tiny-llava-onevision": dict(
        seed=44, arch="LlavaOnevisionForConditionalGeneration", model_type="llava_onevision", family="qwen2",
        processor="LlavaOnevisionProcessor", improc="LlavaOnevisionImageProcessor", tied=True,
        scales=dict(embed=6.0, vo=8.0), vision_qk=0.4,
        vision=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, image_size=32, patch_size=8, vision_use_head=False),
        text=dict(model_type="qwen2", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  rms_norm_eps=1e-06, rope_theta=1000000.0, use_sliding_window=False, tie_word_embeddings=True),
        vision_feature_layer=-1, strategy="full", pinpoints=OV_PINPOINTS, vision_aspect_ratio="anyres_max_1",
    ),
}

OV_SPECIAL = ft.QWEN_SPECIAL + ["<video>"]


def onevision_tokenizer():
    """tiny-llava-qwen2-siglip's byte-level BPE with OneVision's <video> token added (id 4)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.train_from_iterator(ft._corpus("qwen2"), trainer=ft._trainer(OV_SPECIAL, pre_tokenizers.ByteLevel.alphabet()))
    return tok


FAMILY = {
    "llama": dict(tokenizer=mf.make_tokenizer, special=mf.SPECIAL, template=mf.CHAT_TEMPLATE,
                  bos="<s>", eos="</s>", pad="<pad>", unk="<unk>"),
    "qwen2": dict(tokenizer=onevision_tokenizer, special=OV_SPECIAL, template=ft.QWEN_TEMPLATE,
                  bos=None, eos="<|im_end|>", pad="<|endoftext|>", unk=None),
}


def is_ov(spec: dict) -> bool:
    return spec["model_type"] == "llava_onevision"


def config_json(spec: dict, vocab: int, ids: dict, fam: dict) -> dict:
    cfg = {
        "architectures": [spec["arch"]], "model_type": spec["model_type"],
        "image_token_index": ids["<image>"], "pad_token_id": ids[fam["pad"]],
        "projector_hidden_act": "gelu", "image_grid_pinpoints": spec["pinpoints"],
        "text_config": {"vocab_size": vocab, **spec["text"]}, "vision_config": dict(spec["vision"]),
        "vision_feature_layer": spec["vision_feature_layer"],
        "vision_feature_select_strategy": spec["strategy"],
        "tie_word_embeddings": spec["tied"], "torch_dtype": "float32", "vocab_size": vocab,
    }
    if is_ov(spec):
        cfg["vision_aspect_ratio"] = spec["vision_aspect_ratio"]
        cfg["video_token_index"] = ids["<video>"]
    return cfg


def preprocessor_config(spec: dict) -> dict:
    size = spec["vision"]["image_size"]
    common = {"do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True, "do_pad": True,
              "image_grid_pinpoints": spec["pinpoints"], "processor_class": spec["processor"],
              "image_processor_type": spec["improc"], "resample": 3, "rescale_factor": 0.00392156862745098}
    if is_ov(spec):
        return {**common, "image_mean": mff.SIGLIP_MEAN, "image_std": mff.SIGLIP_STD,
                "size": {"height": size, "width": size}}
    return {**common, "image_mean": mf.CLIP_MEAN, "image_std": mf.CLIP_STD, "do_center_crop": True,
            "crop_size": {"height": size, "width": size}, "size": {"shortest_edge": size}}


def processor_config(spec: dict) -> dict:
    p = spec["vision"]["image_size"] // spec["vision"]["patch_size"]
    cfg = {"image_token": "<image>", "processor_class": spec["processor"],
           "vision_feature_select_strategy": spec["strategy"]}
    if is_ov(spec):
        return {**cfg, "num_image_tokens": p * p, "vision_aspect_ratio": spec["vision_aspect_ratio"]}
    return {**cfg, "patch_size": spec["vision"]["patch_size"], "num_additional_image_tokens": 1}


def write_folder(out: Path, spec: dict, tok, fam: dict) -> dict:
    ids = {t: tok.token_to_id(t) for t in fam["special"]}
    mf.dump(out / "config.json", config_json(spec, tok.get_vocab_size(), ids, fam))
    gen = {"eos_token_id": ids[fam["eos"]], "pad_token_id": ids[fam["pad"]]}
    if fam["bos"]:
        gen = {"bos_token_id": ids[fam["bos"]], **gen}
    mf.dump(out / "generation_config.json", gen)
    mf.dump(out / "preprocessor_config.json", preprocessor_config(spec))
    mf.dump(out / "processor_config.json", processor_config(spec))
    mf.dump(out / "chat_template.json", {"chat_template": fam["template"]})
    tok.save(str(out / "tokenizer.json"))
    tcfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": fam["bos"], "eos_token": fam["eos"],
            "unk_token": fam["unk"], "pad_token": fam["pad"], "model_max_length": 256,
            "clean_up_tokenization_spaces": False, "padding_side": "left",
            "added_tokens_decoder": ft.added_tokens_decoder(tok, fam["special"])}
    if fam["bos"]:
        tcfg["add_bos_token"], tcfg["add_eos_token"] = True, False
    mf.dump(out / "tokenizer_config.json", tcfg)
    return ids


def model_class(spec: dict):
    import transformers

    return getattr(transformers, spec["arch"])


def make_processor(out: Path, spec: dict, template: str):
    """The family's processor with the folder's tokenizer and PIL-backend image processor (no video processor)."""
    import transformers
    from transformers import AutoImageProcessor, PreTrainedTokenizerFast

    base = getattr(transformers, spec["processor"])

    class ImageOnly(base):
        def check_argument_for_proper_class(self, argument_name, argument):
            if argument_name == "video_processor" and argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(out))
    improc = AutoImageProcessor.from_pretrained(str(out))
    kw = processor_config(spec)
    kw.pop("processor_class")
    return ImageOnly(image_processor=improc, tokenizer=tokenizer, chat_template=template, **kw)


def encode(processor, image: Image.Image) -> dict:
    rendered = fr.render(processor)
    bos = processor.tokenizer.bos_token
    enc = processor(images=image, text=rendered, return_tensors="pt",
                    add_special_tokens=not (bos is not None and rendered.startswith(bos)))
    msgs = fr.messages()
    msgs[0]["content"][0]["image"] = image
    direct = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    assert torch.equal(direct["input_ids"], enc["input_ids"]), (direct["input_ids"], enc["input_ids"])
    assert torch.equal(direct["pixel_values"], enc["pixel_values"])
    return {"input_ids": enc["input_ids"][0], "pixel_values": enc["pixel_values"][0], "image_sizes": enc["image_sizes"]}


def packing(model, image_sizes: torch.Tensor, tiles: int, p: int) -> tuple[torch.Tensor, list[int]]:
    """The linear map M [F, tiles*p] from per-tile projector outputs to the packed image features
    (F rows; newline rows are zero), and the newline row indices, from transformers' own
    pack_image_features applied to a one-hot basis."""
    basis = torch.eye(tiles * p).reshape(tiles, p, tiles * p)
    mm = model.model
    kw = {"vision_aspect_ratio": model.config.vision_aspect_ratio} if hasattr(model.config, "vision_aspect_ratio") \
        else {"vision_feature_select_strategy": model.config.vision_feature_select_strategy}
    packed, _ = mm.pack_image_features([basis], image_sizes, image_newline=torch.zeros(tiles * p), **kw)
    marks, _ = mm.pack_image_features([torch.zeros(tiles, p, 1)], image_sizes, image_newline=torch.ones(1), **kw)
    newline_rows = (marks[0][:, 0] == 1).nonzero().flatten().tolist()
    return packed[0], newline_rows


@torch.no_grad()
def image_reference(model, processor, image: Image.Image) -> dict:
    """Input ids, pixels, sizes, greedy ids and layout of one image."""
    cfg = model.config
    enc = encode(processor, image)
    ids, pv, sizes = enc["input_ids"], enc["pixel_values"], enc["image_sizes"]
    gen = model.generate(input_ids=ids[None], pixel_values=pv[None], image_sizes=sizes,
                         attention_mask=torch.ones_like(ids)[None], do_sample=False,
                         max_new_tokens=mf.MAX_NEW_TOKENS, min_new_tokens=mf.MAX_NEW_TOKENS)
    out = gen[0, ids.shape[0]:]
    p = (cfg.vision_config.image_size // cfg.vision_config.patch_size) ** 2
    mat, newline_rows = packing(model, sizes, pv.shape[0], p)
    img_pos = (ids == cfg.image_token_index).nonzero().flatten()
    assert img_pos.shape[0] == mat.shape[0], (img_pos.shape, mat.shape)
    from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape
    from transformers.image_processing_utils import select_best_resolution

    from transformers.models.llava_next.modeling_llava_next import unpad_image

    nph, npw = get_anyres_image_grid_shape(sizes[0].tolist(), cfg.image_grid_pinpoints, cfg.vision_config.image_size)
    side = cfg.vision_config.image_size // cfg.vision_config.patch_size
    canvas = (nph * side, npw * side)
    unpadded = list(unpad_image(torch.zeros(1, *canvas), sizes[0]).shape[1:])
    rows = len(newline_rows)
    cols = (img_pos.shape[0] - side * side) // rows - 1
    return {"canvas_grid_hw": list(canvas), "unpadded_grid_hw": unpadded, "stitched_grid_hw": [rows, cols],
            "enc": enc, "output_ids": out, "packing": mat, "newline_rows": newline_rows,
            "newline_positions": img_pos[newline_rows].tolist(), "image_span": [int(img_pos[0]), int(img_pos.shape[0])],
            "tiles": int(pv.shape[0]), "tile_grid_hw": [int(nph), int(npw)],
            "best_resolution_hw": list(select_best_resolution(sizes[0].tolist(), cfg.image_grid_pinpoints)),
            }


@torch.no_grad()
def make_reference(name: str, spec: dict, model, processor, raw_tok, images: dict, special: list[str]) -> None:
    cfg = model.config
    image_id = cfg.image_token_index
    wide, tall = image_reference(model, processor, images["wide"]), image_reference(model, processor, images["tall"])
    ids, pv, sizes = wide["enc"]["input_ids"], wide["enc"]["pixel_values"], wide["enc"]["image_sizes"]
    out_ids = wide["output_ids"]
    rendered = fr.render(processor)
    raw = raw_tok.encode(rendered).ids
    n_feat = int((ids == image_id).sum())
    expanded = []
    for t_ in raw:
        expanded.extend([t_] * n_feat if t_ == image_id else [t_])
    assert expanded == ids.tolist(), (expanded, ids.tolist())
    assert not bool((out_ids == image_id).any()), "the answer contains the image-token id"
    n, t = ids.shape[0], out_ids.shape[0]
    seq = torch.cat([ids, out_ids[:-1]])
    fwd = model(input_ids=seq[None], pixel_values=pv[None], image_sizes=sizes, output_attentions=True,
                output_hidden_states=True)
    logits = fwd.logits[0]
    argmax = logits[n - 1:].argmax(-1)
    assert torch.equal(argmax, out_ids), (argmax, out_ids)
    top2 = logits[n - 1:].topk(2, dim=-1).values
    min_margin = float((top2[:, 0] - top2[:, 1]).min())
    prefill_last = model(input_ids=ids[None], pixel_values=pv[None], image_sizes=sizes).logits[0, -1]
    vout = model.model.vision_tower(pv, output_attentions=True, output_hidden_states=True)
    k = cfg.vision_feature_layer % len(vout.hidden_states)
    vision_attn = torch.stack(list(vout.attentions))  # [Lv, tiles, Hv, Pv, Pv]
    feats = model.model.get_image_features(pixel_values=pv[None], image_sizes=sizes).pooler_output[0]
    sel = vout.hidden_states[cfg.vision_feature_layer]
    tile_proj = model.model.multi_modal_projector(sel[:, 1:] if cfg.vision_feature_select_strategy == "default" else sel)
    rebuilt = wide["packing"] @ tile_proj.reshape(-1, tile_proj.shape[-1])
    rebuilt[wide["newline_rows"]] = model.model.image_newline
    assert float((rebuilt - feats).abs().max()) < 1e-5, "the packing matrix does not rebuild the image features"

    tensors = {
        "input_ids": ids.to(torch.int64), "output_ids": out_ids.to(torch.int64),
        "pixel_values": pv.float(), "image_sizes": sizes.to(torch.int64),
        "logits": logits.float(), "prefill_logits_last": prefill_last.float(),
        "attentions": torch.stack([a[0] for a in fwd.attentions]).float(),
        "vision_attentions": vision_attn.float(), "vision_selected_hidden": sel.float(),
        "image_features": feats.float(), "packing": wide["packing"].float(),
        "image_newline": model.model.image_newline.detach().float(),
        "tall_input_ids": tall["enc"]["input_ids"].to(torch.int64),
        "tall_output_ids": tall["output_ids"].to(torch.int64),
        "tall_pixel_values": tall["enc"]["pixel_values"].float(),
        "tall_image_sizes": tall["enc"]["image_sizes"].to(torch.int64), "tall_packing": tall["packing"].float(),
    }
    tensors = {k_: v.contiguous() for k_, v in tensors.items()}
    save_file(tensors, str(FIX / "reference" / f"{name}.safetensors"))

    tok = processor.tokenizer

    def layout(r: dict, image_file: str, image: Image.Image) -> dict:
        return {"image": image_file, "image_size_wh": list(image.size),
                "image_sizes_hw": r["enc"]["image_sizes"][0].tolist(), "tiles_with_base": r["tiles"],
                "tile_grid_hw": r["tile_grid_hw"], "best_resolution_hw": r["best_resolution_hw"],
                "image_span": r["image_span"], "num_image_tokens": r["image_span"][1],
                "canvas_grid_hw": r["canvas_grid_hw"], "unpadded_grid_hw": r["unpadded_grid_hw"],
                "stitched_grid_hw": r["stitched_grid_hw"], "image_newline_positions": r["newline_positions"],
                "input_ids": r["enc"]["input_ids"].tolist(), "output_ids": r["output_ids"].tolist()}

    meta = {
        "model": name, "family": {"decoder": cfg.text_config.model_type, "vision_tower": cfg.vision_config.model_type},
        "prompt": mf.PROMPT, "messages": fr.messages(), "rendered_prompt": rendered,
        "max_new_tokens": mf.MAX_NEW_TOKENS, "min_new_tokens": mf.MAX_NEW_TOKENS,
        "decoding": "greedy (do_sample=False); min_new_tokens = max_new_tokens, so EOS cannot end it early",
        "attn_implementation": "eager", "dtype": "float32", "N": n, "T": t, "S": n + t - 1,
        "image_grid_pinpoints": cfg.image_grid_pinpoints,
        "vision_aspect_ratio": getattr(cfg, "vision_aspect_ratio", None),
        "vision_feature_layer": cfg.vision_feature_layer,
        "vision_feature_select_strategy": cfg.vision_feature_select_strategy,
        "vision_tokens_per_tile": int(vision_attn.shape[-1]), "vision_layers_feeding_projector": k,
        "base_features": int((cfg.vision_config.image_size // cfg.vision_config.patch_size) ** 2),
        "wide": layout(wide, "tests/fixtures/image.png", images["wide"]),
        "tall": layout(tall, "tests/fixtures/image_tall.png", images["tall"]),
        "input_ids_unexpanded": raw, "input_ids": ids.tolist(), "output_ids": out_ids.tolist(),
        "input_tokens": tok.convert_ids_to_tokens(ids.tolist()),
        "output_tokens": tok.convert_ids_to_tokens(out_ids.tolist()),
        "output_text": tok.decode(out_ids.tolist(), skip_special_tokens=False),
        "output_text_skip_special": tok.decode(out_ids.tolist(), skip_special_tokens=True),
        "special_ids": {s: raw_tok.token_to_id(s) for s in special}, "image_token_index": image_id,
        "bos_prepended": bool(tok.bos_token) and int(ids[0]) == tok.convert_tokens_to_ids(tok.bos_token),
        "max_abs_hidden_state": max(float(h.abs().max()) for h in fwd.hidden_states),
        "max_abs_logit": float(logits.abs().max()), "min_top1_top2_logit_margin": min_margin,
        "tensors": {k_: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)}
                    for k_, v in tensors.items()},
        "notes": NOTES + (OV_NOTES if is_ov(spec) else NEXT_NOTES),
    }
    mf.dump(FIX / "reference" / f"{name}.json", meta)
    print(f"{name}: N={n} T={t} wide {meta['wide']['tile_grid_hw']} tiles, {meta['wide']['num_image_tokens']} image "
          f"tokens, grid {meta['wide']['unpadded_grid_hw']} -> {meta['wide']['stitched_grid_hw']}; tall "
          f"{meta['tall']['tile_grid_hw']}, {meta['tall']['num_image_tokens']} tokens, grid "
          f"{meta['tall']['unpadded_grid_hw']} -> {meta['tall']['stitched_grid_hw']}; "
          f"out={meta['output_tokens']} margin={min_margin:.3f} max|logit|={meta['max_abs_logit']:.1f}")


NOTES = [
    "logits/attentions: ONE forward over input_ids + output_ids[:-1] (S positions), transformers' own "
    "forward (image features scattered into the <image> positions of the prompt).",
    "pixel_values [1+K, 3, 32, 32]: the base view (whole image resized to the tile size) first, then the K "
    "tiles of the best-resolution canvas in row-major order (tile_grid_hw); *_image_sizes: [[height, width]] "
    "of the original image.",
    "image_features [F, D]: base features first (base_features rows), then the stitched high-resolution "
    "grid after spatial unpad, one image_newline row after each grid row (image_newline_positions: absolute "
    "input positions of those rows).",
    "packing [F, (1+K)*Pf]: the linear map from the per-tile projector outputs (tile-major, Pf features a "
    "tile) to image_features, newline rows zero; packing @ proj + newline rows == image_features (checked). "
    "It says which tile cell each feature comes from (0/1 entries) or, where pooled, its bilinear weights.",
    "vision_attentions [Lv, 1+K, Hv, Pv, Pv]: every vision layer, per tile (tile 0 = base view).",
    "vision_selected_hidden [1+K, Pv, Dv]: hidden_states[vision_feature_layer] per tile, before the projector.",
]
NEXT_NOTES = ["llava-next: CLIP with CLS (Pv = 17, strategy default drops it: Pf = 16), layer -2; "
              "LlavaNextImageProcessor: tiles and base view are resized (shortest edge) and centre-cropped "
              "to 32 after the best-resolution resize-and-pad."]
OV_NOTES = ["onevision: SigLIP without CLS (Pv = Pf = 16), layer -1; anyres_max_1: when the unpadded grid has "
            "more than 1.1 x (1 tile of features) it is pooled by bilinear interpolation (align_corners False) "
            "to int(h // r) x int(w // r), r = sqrt(h * w / (1 * 16)); newline rows after the pooled rows."]


def to_legacy(key: str) -> str:
    """transformers-5 key -> the legacy layout the llava-hf NeXT / OneVision checkpoints are published in."""
    return "image_newline" if key == "model.image_newline" else mf.to_legacy(key)


def make_model(name: str, spec: dict, images: dict) -> None:
    from transformers import AutoConfig

    out = FIX / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    fam = FAMILY[spec["family"]]
    tok = fam["tokenizer"]()
    write_folder(out, spec, tok, fam)
    torch.manual_seed(spec["seed"])
    config = AutoConfig.from_pretrained(str(out))
    config._attn_implementation = "eager"
    model = model_class(spec)(config).eval()
    mf.sharpen(model, spec["seed"], spec["scales"])
    with torch.no_grad():  # a softer vision softmax keeps the f32 vision relevancy close to the f64 one
        for pname, p in model.model.vision_tower.named_parameters():
            if pname.endswith(("q_proj.weight", "k_proj.weight")):
                p.mul_(spec.get("vision_qk", 1.0))
    with torch.no_grad():
        model.model.image_newline.copy_(torch.randn(model.model.image_newline.shape,
                                                    generator=torch.Generator().manual_seed(spec["seed"])))
    if spec["tied"]:
        model.tie_weights()
    sd = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    if spec["tied"]:
        sd.pop("lm_head.weight", None)
    sd = {to_legacy(k): v for k, v in sd.items()}
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    written = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model = model_class(spec).from_pretrained(str(out), attn_implementation="eager", dtype=torch.float32).eval()
    loaded = model.state_dict()
    assert set(loaded) == set(written), set(loaded) ^ set(written)
    for k, v in written.items():
        assert torch.equal(loaded[k], v), f"{k} did not round-trip"
    processor = make_processor(out, spec, fam["template"])
    make_reference(name, spec, model, processor, tok, images, fam["special"])
    print(f"{name}: folder bytes {sum((out / f).stat().st_size for f in os.listdir(out))}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=list(SPECS), help="make one model only")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    images = {"wide": Image.open(FIX / "image.png").convert("RGB"),
              "tall": Image.open(FIX / "image_tall.png").convert("RGB")}
    for name, spec in SPECS.items():
        if args.only in (None, name):
            make_model(name, spec, images)
    return 0


if __name__ == "__main__":
    sys.exit(main())
