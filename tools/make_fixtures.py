#!/usr/bin/env python3
"""Make the tiny random-weight LLaVA fixtures and the transformers reference outputs.

Run by hand from the repository root (needs torch, transformers, tokenizers, safetensors,
pillow, numpy; nothing in the build or CI runs it):

    python tools/make_fixtures.py            # writes tests/fixtures/...

Everything is deterministic (fixed seeds). It writes:

  tests/fixtures/image.png, tests/fixtures/not_an_image.png
  tests/fixtures/tiny-llava-gqa/    legacy key layout, one model.safetensors, GQA decoder,
                                    vision_feature_layer -2, strategy "default", untied lm_head,
                                    chat template in tokenizer_config.json
  tests/fixtures/tiny-llava-full/   current key layout, 2 shards + index, MHA decoder with linear
                                    rope scaling, vision_feature_layer -1, strategy "full",
                                    tied embeddings (no lm_head in the files),
                                    chat template in chat_template.json
  tests/fixtures/reference/<model>.safetensors + <model>.json   transformers outputs
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

SPECIAL = ["<unk>", "<s>", "</s>", "<image>", "<pad>"]
VOCAB_SIZE = 640

PROMPT = "What is in the picture?"
MAX_NEW_TOKENS = 8

# LLaVA-1.5 style template; written to work the same in jinja2 and minijinja.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'] | upper }}{{ ': ' }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}{{ ' ' }}"
    "{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}{{ '<image>\\n' }}{% endif %}{% endfor %}"
    "{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{{ ' ' }}{% endif %}{% endfor %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


# ----------------------------------------------------------------------------------------
# corpus and tokenizer


def corpus() -> list[str]:
    """A few hundred deterministic English sentences about shapes, colours and images."""
    colours = ["red", "green", "blue", "yellow", "white", "black", "orange", "purple", "grey", "pink",
               "brown", "golden", "silver", "violet", "cyan", "magenta", "dark", "light"]
    shapes = ["circle", "square", "triangle", "rectangle", "star", "line", "dot", "box", "ring", "cross",
              "cat", "dog", "car", "tree", "house", "flower", "bird", "boat", "ball", "chair", "table",
              "window", "door", "cloud", "mountain", "river", "person", "horse", "apple", "banana"]
    places = ["left", "right", "top", "bottom", "centre", "middle", "corner", "edge", "background",
              "foreground", "front", "back"]
    verbs = ["shows", "contains", "has", "depicts", "displays", "includes", "features"]
    sizes = ["small", "large", "big", "tiny", "wide", "tall", "round", "bright", "striped", "shiny"]
    rng = np.random.default_rng(1234)
    out = []
    for i in range(900):
        c1, c2 = rng.choice(colours, 2, replace=False)
        s1, s2 = rng.choice(shapes, 2, replace=False)
        p = rng.choice(places)
        v = rng.choice(verbs)
        z = rng.choice(sizes)
        kind = i % 6
        if kind == 0:
            out.append(f"The picture {v} a {z} {c1} {s1} on the {p}.")
        elif kind == 1:
            out.append(f"USER: What is in the picture?\nASSISTANT: A {c1} {s1} and a {c2} {s2}.")
        elif kind == 2:
            out.append(f"There is a {c1} {s1} next to the {c2} {s2} in the image.")
        elif kind == 3:
            out.append(f"Describe the image. The image {v} {i % 7 + 2} {s1}s, one of them is {c2}.")
        elif kind == 4:
            out.append(f"Where is the {c1} {s1}? It is in the {p} of the photo, near a {z} {s2}.")
        else:
            out.append(f"What colour is the {s1}? The {s1} is {c1}, and the background is {c2}!")
    return out


def make_tokenizer() -> Tokenizer:
    """A small LLaMA-like BPE tokenizer: Metaspace pre-tokenizer, BOS added by the post-processor."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    alphabet = [chr(c) for c in range(32, 127)] + ["\n", "\u2581"]
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return tok


# ----------------------------------------------------------------------------------------
# images


def make_image() -> Image.Image:
    """48x36 RGB picture: light background, a red square at left, a blue circle at right."""
    img = Image.new("RGB", (48, 36), (235, 230, 210))
    d = ImageDraw.Draw(img)
    d.rectangle([4, 6, 19, 21], fill=(220, 30, 30))
    d.ellipse([26, 12, 43, 29], fill=(30, 60, 220))
    d.line([0, 33, 47, 33], fill=(20, 140, 40), width=2)
    return img


def expand2square(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """LLaVA's expand-to-square: paste the image centred on a square of the background colour."""
    w, h = img.size
    if w == h:
        return img
    if w > h:
        out = Image.new(img.mode, (w, w), background)
        out.paste(img, (0, (w - h) // 2))
        return out
    out = Image.new(img.mode, (h, h), background)
    out.paste(img, ((h - w) // 2, 0))
    return out


# ----------------------------------------------------------------------------------------
# configs

SPECS = {
    "tiny-llava-gqa": dict(
        seed=1,
        layout="legacy",
        shards=1,
        tied=False,
        template_in="tokenizer_config",
        vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                    image_size=32, patch_size=8),
        text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, rope_theta=10000.0, max_position_embeddings=256,
                  rms_norm_eps=1e-05),
        vision_feature_layer=-2,
        strategy="default",
    ),
    "tiny-llava-full": dict(
        seed=2,
        layout="current",
        shards=2,
        tied=True,
        scales=dict(embed=8.0, vo=6.0),
        template_in="chat_template_json",
        vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                    image_size=32, patch_size=8),
        text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=256,
                  rope_scaling={"rope_type": "linear", "factor": 2.0}),
        vision_feature_layer=-1,
        strategy="full",
    ),
}


def config_json(spec: dict, vocab: int, image_id: int, pad_id: int) -> dict:
    """Minimal llava-hf style config.json (omits fields whose defaults the loader must know)."""
    text = {"model_type": "llama", "vocab_size": vocab, **spec["text"]}
    if spec["tied"]:
        text["tie_word_embeddings"] = True
    vision = {"model_type": "clip_vision_model", **spec["vision"]}
    cfg = {
        "architectures": ["LlavaForConditionalGeneration"],
        "model_type": "llava",
        "image_token_index": image_id,
        "pad_token_id": pad_id,
        "projector_hidden_act": "gelu",
        "text_config": text,
        "vision_config": vision,
        "vision_feature_layer": spec["vision_feature_layer"],
        "vision_feature_select_strategy": spec["strategy"],
        "tie_word_embeddings": spec["tied"],
        "torch_dtype": "float32",
        "vocab_size": vocab,
    }
    return cfg


def preprocessor_config(size: int) -> dict:
    return {
        "crop_size": {"height": size, "width": size},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": CLIP_MEAN,
        "image_processor_type": "CLIPImageProcessor",
        "image_std": CLIP_STD,
        "processor_class": "LlavaProcessor",
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"shortest_edge": size},
    }


# ----------------------------------------------------------------------------------------
# weights


DEFAULT_SCALES = dict(qk=10.0, vo=3.0, embed=20.0, lm_head=20.0, vision_embed=10.0, projector=5.0)


def sharpen(model: torch.nn.Module, seed: int, scales: dict) -> None:
    """Scale random weights so attention has structure and greedy decoding varies.

    Plain random init (std 0.02) gives uniform attention and logits near zero. We scale the
    query/key projections (sharper attention), the embeddings and the lm_head (larger logits),
    and give the norms' weights some spread, keeping activations far from f16 limits.
    """
    sc = {**DEFAULT_SCALES, **scales}
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("q_proj.weight") or name.endswith("k_proj.weight"):
                p.mul_(sc["qk"])
            elif name.endswith(("v_proj.weight", "o_proj.weight", "out_proj.weight", "down_proj.weight")):
                p.mul_(sc["vo"])
            elif "embed_tokens" in name:
                p.mul_(sc["embed"])
            elif name.endswith("lm_head.weight"):
                p.mul_(sc["lm_head"])
            elif "patch_embedding" in name or "position_embedding" in name or "class_embedding" in name:
                p.mul_(sc["vision_embed"])
            elif "multi_modal_projector" in name and name.endswith("weight"):
                p.mul_(sc["projector"])
            elif ("norm" in name or "layrnorm" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=g))


def to_legacy(key: str) -> str:
    """transformers-5 in-memory key -> legacy llava file layout (transformers < 4.52)."""
    if key.startswith("model.language_model."):
        return "language_model.model." + key[len("model.language_model."):]
    if key == "lm_head.weight":
        return "language_model.lm_head.weight"
    if key.startswith("model.vision_tower."):
        return "vision_tower.vision_model." + key[len("model.vision_tower."):]
    if key.startswith("model.multi_modal_projector."):
        return "multi_modal_projector." + key[len("model.multi_modal_projector."):]
    raise ValueError(f"unexpected key {key}")


def to_current(key: str) -> str:
    """transformers-5 in-memory key -> current llava file layout (as saved by transformers 4.52+).

    transformers 5 itself keeps CLIP's `vision_model.` level out of its module tree (and out of
    what it saves); the checkpoints people download keep it, so the fixture keeps it too.
    """
    if key.startswith("model.vision_tower."):
        return "model.vision_tower.vision_model." + key[len("model.vision_tower."):]
    if key.startswith(("model.language_model.", "model.multi_modal_projector.")) or key == "lm_head.weight":
        return key
    raise ValueError(f"unexpected key {key}")


def write_weights(model, out: Path, spec: dict) -> list[str]:
    sd = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    if spec["tied"]:
        sd.pop("lm_head.weight", None)
    rename = to_legacy if spec["layout"] == "legacy" else to_current
    sd = {rename(k): v for k, v in sd.items()}
    keys = sorted(sd)
    if spec["shards"] == 1:
        save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
        return ["model.safetensors"]
    n = spec["shards"]
    # split: vision + projector + embeddings in shard 1, the rest in shard 2 (by sorted order)
    parts = [keys[i * len(keys) // n:(i + 1) * len(keys) // n] for i in range(n)]
    weight_map, files, total = {}, [], 0
    for i, part in enumerate(parts):
        fname = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        save_file({k: sd[k] for k in part}, str(out / fname), metadata={"format": "pt"})
        files.append(fname)
        for k in part:
            weight_map[k] = fname
            total += sd[k].numel() * sd[k].element_size()
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return files


def dump(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


# ----------------------------------------------------------------------------------------
# one model


def make_model(name: str, spec: dict, tok: Tokenizer, image: Image.Image) -> None:
    from transformers import (
        AutoConfig,
        CLIPImageProcessorPil,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    out = FIX / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    vocab = tok.get_vocab_size()
    ids = {t: tok.token_to_id(t) for t in SPECIAL}
    cfg = config_json(spec, vocab, ids["<image>"], ids["<pad>"])
    dump(out / "config.json", cfg)
    dump(out / "generation_config.json",
         {"bos_token_id": ids["<s>"], "eos_token_id": ids["</s>"], "pad_token_id": ids["<pad>"]})
    size = spec["vision"]["image_size"]
    dump(out / "preprocessor_config.json", preprocessor_config(size))
    dump(out / "processor_config.json", {
        "image_token": "<image>",
        "num_additional_image_tokens": 1,
        "patch_size": spec["vision"]["patch_size"],
        "processor_class": "LlavaProcessor",
        "vision_feature_select_strategy": spec["strategy"],
    })
    tok.save(str(out / "tokenizer.json"))
    tcfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "model_max_length": 256,
        "clean_up_tokenization_spaces": False,
        "padding_side": "left",
        "added_tokens_decoder": {
            str(ids[t]): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                          "single_word": False, "special": True}
            for t in SPECIAL
        },
    }
    if spec["template_in"] == "tokenizer_config":
        tcfg["chat_template"] = CHAT_TEMPLATE
    else:
        dump(out / "chat_template.json", {"chat_template": CHAT_TEMPLATE})
    dump(out / "tokenizer_config.json", tcfg)

    # model with random weights
    torch.manual_seed(spec["seed"])
    config = AutoConfig.from_pretrained(str(out))
    config._attn_implementation = "eager"
    model = LlavaForConditionalGeneration(config).eval()
    sharpen(model, spec["seed"], spec.get("scales", {}))
    if spec["tied"]:
        model.tie_weights()
    files = write_weights(model, out, spec)
    written = {k: v.detach().clone() for k, v in model.state_dict().items()}

    # reload from disk, exactly as a user would
    model = LlavaForConditionalGeneration.from_pretrained(
        str(out), attn_implementation="eager", dtype=torch.float32).eval()
    if spec["tied"]:
        assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr() or \
            torch.equal(model.lm_head.weight, model.model.language_model.embed_tokens.weight), "not tied"
    loaded = model.state_dict()
    assert set(loaded) == set(written), set(loaded) ^ set(written)
    for k, v in written.items():
        assert torch.equal(loaded[k], v), f"{k} did not round-trip"
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(out))
    improc = CLIPImageProcessorPil.from_pretrained(str(out))
    processor = LlavaProcessor(
        image_processor=improc, tokenizer=tokenizer, patch_size=spec["vision"]["patch_size"],
        vision_feature_select_strategy=spec["strategy"], chat_template=CHAT_TEMPLATE,
        num_additional_image_tokens=1,
    )
    make_reference(name, spec, model, processor, tok, image)
    total = sum((out / f).stat().st_size for f in os.listdir(out))
    print(f"{name}: {files} folder bytes {total}")


# ----------------------------------------------------------------------------------------
# reference outputs


@torch.no_grad()
def make_reference(name, spec, model, processor, raw_tok: Tokenizer, image: Image.Image) -> None:
    ref_dir = FIX / "reference"
    ref_dir.mkdir(parents=True, exist_ok=True)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
    rendered = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    enc = processor(images=image, text=rendered, return_tensors="pt")
    input_ids = enc["input_ids"][0]
    pixel_values = enc["pixel_values"]  # [1,3,h,w]
    # the raw tokenizer must agree with transformers on the unexpanded prompt
    raw = raw_tok.encode(rendered).ids
    image_id = model.config.image_token_index
    expanded = []
    n_feat = int((input_ids == image_id).sum())
    for t in raw:
        expanded.extend([t] * n_feat if t == image_id else [t])
    assert expanded == input_ids.tolist(), (expanded, input_ids.tolist())

    gen = model.generate(
        input_ids=input_ids[None], pixel_values=pixel_values, attention_mask=torch.ones_like(input_ids)[None],
        do_sample=False, max_new_tokens=MAX_NEW_TOKENS, min_new_tokens=MAX_NEW_TOKENS,
    )
    output_ids = gen[0, input_ids.shape[0]:]
    n, t = input_ids.shape[0], output_ids.shape[0]
    seq = torch.cat([input_ids, output_ids[:-1]])
    fwd = model(input_ids=seq[None], pixel_values=pixel_values, output_attentions=True)
    logits = fwd.logits[0]
    attentions = torch.stack([a[0] for a in fwd.attentions])  # [L,H,S,S]
    pre = model(input_ids=input_ids[None], pixel_values=pixel_values)
    prefill_last = pre.logits[0, -1]
    # check: greedy tokens are the argmax of the one-pass logits
    argmax = logits[n - 1:].argmax(-1)
    assert torch.equal(argmax, output_ids), (argmax, output_ids)

    vt = model.model.vision_tower
    vout = vt(pixel_values, output_attentions=True, output_hidden_states=True)
    vision_attn = torch.stack([a[0] for a in vout.attentions])  # [Lv,Hv,P+1,P+1]
    feats = model.model.get_image_features(
        pixel_values=pixel_values, vision_feature_layer=spec["vision_feature_layer"],
        vision_feature_select_strategy=spec["strategy"])
    if not torch.is_tensor(feats):
        feats = feats.pooler_output if hasattr(feats, "pooler_output") else feats[0]
    if isinstance(feats, (list, tuple)):
        feats = feats[0]
    image_features = feats.reshape(-1, feats.shape[-1])
    vision_selected = vout.hidden_states[spec["vision_feature_layer"]][0]

    # other image modes (preprocessing only)
    improc = processor.image_processor
    bg = tuple(int(x * 255) for x in improc.image_mean)
    pad = improc(images=expand2square(image, bg), return_tensors="pt")["pixel_values"][0]
    size = spec["vision"]["image_size"]
    resized = improc(images=image, do_center_crop=False, size={"height": size, "width": size},
                     return_tensors="pt")["pixel_values"][0]

    tensors = {
        "input_ids": input_ids.to(torch.int64),
        "output_ids": output_ids.to(torch.int64),
        "pixel_values": pixel_values[0].float(),
        "pixel_values_pad": pad.float(),
        "pixel_values_resize": resized.float(),
        "logits": logits.float(),
        "prefill_logits_last": prefill_last.float(),
        "attentions": attentions.float(),
        "vision_attentions": vision_attn.float(),
        "vision_selected_hidden": vision_selected.float(),
        "image_features": image_features.float(),
    }
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    save_file(tensors, str(ref_dir / f"{name}.safetensors"))

    # f16 sanity: largest activation magnitude
    hs = model(input_ids=seq[None], pixel_values=pixel_values, output_hidden_states=True).hidden_states
    max_act = max(float(h.abs().max()) for h in hs)
    tok = processor.tokenizer
    meta = {
        "model": name,
        "prompt": PROMPT,
        "messages": messages,
        "rendered_prompt": rendered,
        "image": "tests/fixtures/image.png",
        "image_mode": "default",
        "max_new_tokens": MAX_NEW_TOKENS,
        "min_new_tokens": MAX_NEW_TOKENS,
        "decoding": "greedy (do_sample=False); min_new_tokens = max_new_tokens, so EOS cannot end it early",
        "attn_implementation": "eager",
        "dtype": "float32",
        "N": n,
        "T": t,
        "S": n + t - 1,
        "image_span": [int((input_ids == image_id).nonzero()[0]), n_feat],
        "num_image_features": n_feat,
        "input_ids_unexpanded": raw,
        "input_ids": input_ids.tolist(),
        "output_ids": output_ids.tolist(),
        "input_tokens": tok.convert_ids_to_tokens(input_ids.tolist()),
        "output_tokens": tok.convert_ids_to_tokens(output_ids.tolist()),
        "output_text": tok.decode(output_ids.tolist(), skip_special_tokens=False),
        "special_ids": {t_: raw_tok.token_to_id(t_) for t_ in SPECIAL},
        "bos_prepended": True,
        "vision_feature_layer": spec["vision_feature_layer"],
        "vision_feature_select_strategy": spec["strategy"],
        "pad_background_rgb": list(bg),
        "max_abs_hidden_state": max_act,
        "max_abs_logit": float(logits.abs().max()),
        "tensors": {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)}
                    for k, v in tensors.items()},
        "notes": [
            "logits/attentions come from ONE forward over input_ids + output_ids[:-1] (S positions).",
            "attentions: decoder layers [L,H,S,S]; vision_attentions: all vision layers [Lv,Hv,P+1,P+1].",
            "vision_selected_hidden: vision hidden_states[vision_feature_layer] (before post_layernorm), "
            "[P+1, Dv]; vision hidden_states[0] is the embeddings after pre_layrnorm; image_features: projector output for the selected features [F, D].",
            "prefill_logits_last: logits at position N-1 from a forward over input_ids only.",
            "pixel_values: PIL backend CLIPImageProcessor (shortest_edge bicubic resize, centre crop).",
            "pixel_values_pad: expand2square with round-down(image_mean*255) background, then the processor.",
            "pixel_values_resize: resize straight to crop size (bicubic, aspect not kept), no crop.",
        ],
    }
    dump(ref_dir / f"{name}.json", meta)
    print(f"{name}: N={n} T={t} out={meta['output_tokens']} max|h|={max_act:.1f} max|logit|={meta['max_abs_logit']:.1f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=list(SPECS), help="make one model only")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    FIX.mkdir(parents=True, exist_ok=True)
    image = make_image()
    image.save(FIX / "image.png")
    (FIX / "not_an_image.png").write_bytes(b"this is plain text, not a PNG image\n")
    image = Image.open(FIX / "image.png").convert("RGB")
    tok = make_tokenizer()
    for name, spec in SPECS.items():
        if args.only and name != args.only:
            continue
        make_model(name, spec, tok, image)
    return 0


if __name__ == "__main__":
    sys.exit(main())
