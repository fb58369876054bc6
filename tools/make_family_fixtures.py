#!/usr/bin/env python3
"""Make the tiny random-weight fixtures of the other model families and their transformers references.

Run by hand from the repository root after tools/make_fixtures.py (needs torch, transformers,
tokenizers, safetensors, pillow, numpy; nothing in the build or CI runs it):

    python tools/make_family_fixtures.py [--only NAME]   # folders + reference/<name>.{json,safetensors}
    python tools/family_relevancy.py [--only NAME]       # reference/<name>.relevancy.safetensors

Deterministic (fixed seeds; running it again gives byte-identical files). It writes, next to the
LLaVA-1.5 fixtures of make_fixtures.py (which it leaves alone):

  tests/fixtures/tiny-llava-gemma/         CLIP + Gemma decoder (as Intel/llava-gemma-2b): one KV head,
                                           head_dim 24 != hidden/heads, tied embeddings, legacy
                                           "hidden_act": "gelu" (= tanh GELU for Gemma), Gemma turn
                                           template in tokenizer_config.json, legacy key layout
  tests/fixtures/tiny-llava-mistral/       CLIP + Mistral decoder (as llava-hf/bakLlava-v1-hf):
                                           sliding_window 8 < the prompt, [INST] template in
                                           chat_template.json, current key layout
  tests/fixtures/tiny-llava-qwen2-siglip/  SigLIP + Qwen2 decoder (as llava-hf/llava-interleave-qwen-0.5b-hf):
                                           no CLS, vision_feature_layer -1, strategy full, q/k/v
                                           biases, tied, ChatML template in chat_template.jinja,
                                           use_sliding_window false (with a small sliding_window
                                           that must be ignored), legacy key layout
  tests/fixtures/tiny-llava-imgtok/        tiny-llava-gqa with one lm_head row changed so that
                                           greedy decoding emits the image-token id at step 3
  tests/fixtures/reference/<name>.json + <name>.safetensors
"""

from __future__ import annotations

import argparse
import json
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
import make_fixtures as mf  # noqa: E402

FIX = mf.FIX
SIGLIP_MEAN = [0.5, 0.5, 0.5]
SIGLIP_STD = [0.5, 0.5, 0.5]

CLIP_TINY = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_attention_heads=4,
                 image_size=32, patch_size=8)

SPECS = {
    "tiny-llava-gemma": dict(
        seed=24, family="gemma", layout="legacy", tied=True, template_in="tokenizer_config",
        scales=dict(embed=4.0, vo=6.0),
        vision=dict(CLIP_TINY, num_hidden_layers=3),
        text=dict(model_type="gemma", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=1, head_dim=24, hidden_act="gelu",
                  hidden_activation="gelu_pytorch_tanh", max_position_embeddings=256,
                  rms_norm_eps=1e-06, rope_theta=10000.0, tie_word_embeddings=True),
        vision_feature_layer=-2, strategy="default",
    ),
    "tiny-llava-mistral": dict(
        seed=12, family="mistral", layout="current", tied=False, template_in="chat_template_json",
        scales=dict(embed=10.0),
        vision=dict(CLIP_TINY, num_hidden_layers=3),
        text=dict(model_type="mistral", hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  rms_norm_eps=1e-05, rope_theta=10000.0, sliding_window=8),
        vision_feature_layer=-2, strategy="default",
    ),
    "tiny-llava-qwen2-siglip": dict(
        seed=13, family="qwen2", layout="legacy", tied=True, template_in="chat_template_jinja",
        scales=dict(embed=4.0, vo=6.0),
        vision=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
                    num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8,
                    vision_use_head=False),
        text=dict(model_type="qwen2", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  rms_norm_eps=1e-06, rope_theta=1000000.0, use_sliding_window=False, sliding_window=4,
                  max_window_layers=1, tie_word_embeddings=True),
        vision_feature_layer=-1, strategy="full",
    ),
}

FAMILY = {
    "gemma": dict(tokenizer=ft.gemma_tokenizer, special=ft.GEMMA_SPECIAL, template=ft.GEMMA_TEMPLATE,
                  bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>", extra_eos=["<end_of_turn>"]),
    "mistral": dict(tokenizer=ft.mistral_tokenizer, special=ft.MISTRAL_SPECIAL, template=ft.MISTRAL_TEMPLATE,
                    bos="<s>", eos="</s>", pad="<pad>", unk="<unk>", extra_eos=[]),
    "qwen2": dict(tokenizer=ft.qwen_tokenizer, special=ft.QWEN_SPECIAL, template=ft.QWEN_TEMPLATE,
                  bos=None, eos="<|im_end|>", pad="<|endoftext|>", unk=None, extra_eos=[]),
}


def config_json(spec: dict, vocab: int, image_id: int, pad_id: int) -> dict:
    """llava-hf style config.json with the family's text and vision sub-configs."""
    text = {"vocab_size": vocab, **spec["text"]}
    return {
        "architectures": ["LlavaForConditionalGeneration"],
        "model_type": "llava",
        "image_token_index": image_id,
        "pad_token_id": pad_id,
        "projector_hidden_act": "gelu",
        "text_config": text,
        "vision_config": dict(spec["vision"]),
        "vision_feature_layer": spec["vision_feature_layer"],
        "vision_feature_select_strategy": spec["strategy"],
        "tie_word_embeddings": spec["tied"],
        "torch_dtype": "float32",
        "vocab_size": vocab,
    }


def preprocessor_config(spec: dict) -> dict:
    size = spec["vision"]["image_size"]
    if spec["vision"]["model_type"] == "clip_vision_model":
        return mf.preprocessor_config(size)
    return {  # SigLIP: resize straight to size x size (no crop), mean/std 0.5
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": SIGLIP_MEAN,
        "image_processor_type": "SiglipImageProcessor",
        "image_std": SIGLIP_STD,
        "processor_class": "LlavaProcessor",
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"height": size, "width": size},
    }


def num_additional_image_tokens(spec: dict) -> int:
    """1 for a tower with a CLS token (CLIP), 0 without (SigLIP)."""
    return 1 if spec["vision"]["model_type"] == "clip_vision_model" else 0


def write_folder(out: Path, spec: dict, tok, fam: dict) -> dict:
    """Everything but the weights; returns the special ids."""
    vocab = tok.get_vocab_size()
    ids = {t: tok.token_to_id(t) for t in fam["special"]}
    mf.dump(out / "config.json", config_json(spec, vocab, ids["<image>"], ids[fam["pad"]]))
    eos = [ids[fam["eos"]]] + [ids[t] for t in fam["extra_eos"]]
    gen = {"eos_token_id": eos if len(eos) > 1 else eos[0], "pad_token_id": ids[fam["pad"]]}
    if fam["bos"]:
        gen = {"bos_token_id": ids[fam["bos"]], **gen}
    mf.dump(out / "generation_config.json", gen)
    mf.dump(out / "preprocessor_config.json", preprocessor_config(spec))
    mf.dump(out / "processor_config.json", {
        "image_token": "<image>",
        "num_additional_image_tokens": num_additional_image_tokens(spec),
        "patch_size": spec["vision"]["patch_size"],
        "processor_class": "LlavaProcessor",
        "vision_feature_select_strategy": spec["strategy"],
    })
    tok.save(str(out / "tokenizer.json"))
    tcfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": fam["bos"],
        "eos_token": fam["eos"],
        "unk_token": fam["unk"],
        "pad_token": fam["pad"],
        "model_max_length": 256,
        "clean_up_tokenization_spaces": False,
        "padding_side": "left",
        "added_tokens_decoder": ft.added_tokens_decoder(tok, fam["special"]),
    }
    if fam["bos"]:
        tcfg["add_bos_token"], tcfg["add_eos_token"] = True, False
    if spec["family"] == "gemma":
        tcfg["additional_special_tokens"] = ["<start_of_turn>", "<end_of_turn>"]
    if spec["template_in"] == "tokenizer_config":
        tcfg["chat_template"] = fam["template"]
    elif spec["template_in"] == "chat_template_json":
        mf.dump(out / "chat_template.json", {"chat_template": fam["template"]})
    else:
        (out / "chat_template.jinja").write_text(fam["template"])
    mf.dump(out / "tokenizer_config.json", tcfg)
    return ids


def write_weights(model, out: Path, spec: dict) -> None:
    sd = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    if spec["tied"]:
        sd.pop("lm_head.weight", None)
    rename = mf.to_legacy if spec["layout"] == "legacy" else mf.to_current
    sd = {rename(k): v for k, v in sd.items()}
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})


def load_checked(out: Path, written: dict, tied: bool):
    """Load the folder as a user would and check every tensor round-tripped."""
    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(
        str(out), attn_implementation="eager", dtype=torch.float32).eval()
    loaded = model.state_dict()
    assert set(loaded) == set(written), set(loaded) ^ set(written)
    for k, v in written.items():
        assert torch.equal(loaded[k], v), f"{k} did not round-trip"
    if tied:
        assert torch.equal(model.lm_head.weight, model.model.language_model.embed_tokens.weight), "not tied"
    return model


def make_processor(out: Path, spec: dict, template: str):
    from transformers import (
        CLIPImageProcessorPil,
        LlavaProcessor,
        PreTrainedTokenizerFast,
        SiglipImageProcessorPil,
    )

    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(out))
    cls = CLIPImageProcessorPil if spec["vision"]["model_type"] == "clip_vision_model" else SiglipImageProcessorPil
    improc = cls.from_pretrained(str(out))
    return LlavaProcessor(
        image_processor=improc, tokenizer=tokenizer, patch_size=spec["vision"]["patch_size"],
        vision_feature_select_strategy=spec["strategy"], chat_template=template,
        num_additional_image_tokens=num_additional_image_tokens(spec),
    )


def make_model(name: str, spec: dict, image: Image.Image) -> None:
    from transformers import AutoConfig, LlavaForConditionalGeneration

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
    model = LlavaForConditionalGeneration(config).eval()
    mf.sharpen(model, spec["seed"], spec.get("scales", {}))
    if spec["tied"]:
        model.tie_weights()
    write_weights(model, out, spec)
    written = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model = load_checked(out, written, spec["tied"])
    processor = make_processor(out, spec, fam["template"])
    fr.make_reference(name, spec, model, processor, tok, image, fam["special"])
    total = sum((out / f).stat().st_size for f in os.listdir(out))
    print(f"{name}: folder bytes {total}")


def make_imgtok(image: Image.Image, step: int = 2) -> None:
    """tiny-llava-gqa with lm_head[<image>] set so that greedy decoding emits <image> at `step`.

    The new row is c * h / |h|^2 with h the final-norm hidden state that predicts output `step`
    of the unchanged model and c = (top logit there) + 2, so <image> wins there by 2; the steps
    before it are checked to be unchanged (their <image> logit stays below their top logit).
    """
    from transformers import LlavaForConditionalGeneration

    src, out = FIX / "tiny-llava-gqa", FIX / "tiny-llava-imgtok"
    base = mf.SPECS["tiny-llava-gqa"]
    spec = dict(base, family="llama", vision=dict(base["vision"], model_type="clip_vision_model"))
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(src, out)
    model = LlavaForConditionalGeneration.from_pretrained(
        str(out), attn_implementation="eager", dtype=torch.float32).eval()
    processor = make_processor(out, spec, mf.CHAT_TEMPLATE)
    image_id = model.config.image_token_index
    ids, pixel_values = fr.encode(processor, image)
    with torch.no_grad():
        gen = model.generate(input_ids=ids[None], pixel_values=pixel_values, attention_mask=torch.ones_like(ids)[None],
                             do_sample=False, max_new_tokens=mf.MAX_NEW_TOKENS, min_new_tokens=mf.MAX_NEW_TOKENS)
        outs = gen[0, ids.shape[0]:]
        seq = torch.cat([ids, outs[:-1]])
        hs = fr.forward(model, seq, pixel_values, ids.shape[0], output_hidden_states=True).hidden_states[-1][0]
        n = ids.shape[0]
        h = hs[n - 1 + step]
        top = float(model.lm_head(h).max())
        row = (top + 2.0) * h / h.dot(h)
        model.lm_head.weight[image_id] = row
        before = model.lm_head(hs[n - 1:n - 1 + step])
        assert bool((before[:, image_id] < before.max(-1).values - 0.5).all()), "earlier steps would change"
    sd = {mf.to_legacy(k): v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    written = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model = load_checked(out, written, False)
    fr.make_reference("tiny-llava-imgtok", spec, model, processor, mf.make_tokenizer(), image, mf.SPECIAL,
                      expect_image_token_at=step)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=list(SPECS) + ["tiny-llava-imgtok"], help="make one model only")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    image = Image.open(FIX / "image.png").convert("RGB")
    for name, spec in SPECS.items():
        if args.only in (None, name):
            make_model(name, spec, image)
    if args.only in (None, "tiny-llava-imgtok"):
        make_imgtok(image)
    return 0


if __name__ == "__main__":
    sys.exit(main())
