"""transformers reference outputs of the family fixtures (used by tools/make_family_fixtures.py).

Same tensors and JSON as make_fixtures.py's references (tests/fixtures/README.md), generalised
to towers without a CLS token (SigLIP: the vision sequence is the P patches only) and to answers
that contain the image-token id (the one-pass forward scatters image features into the PROMPT's
image positions only; a generated image-token id is embedded as an ordinary token, as
transformers' generate does).
"""

from __future__ import annotations

import torch
from PIL import Image
from safetensors.torch import save_file

import make_fixtures as mf

PROMPT = mf.PROMPT
MAX_NEW_TOKENS = mf.MAX_NEW_TOKENS


def messages() -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]


def has_cls(config) -> bool:
    return config.vision_config.model_type == "clip_vision_model"


def render(processor) -> str:
    return processor.apply_chat_template(messages(), add_generation_prompt=True, tokenize=False)


def encode(processor, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids [N] (image token expanded) and pixel_values [1,3,h,w], as transformers makes them.

    Like transformers' `apply_chat_template(tokenize=True)`, special tokens are not added again
    when the rendered text already starts with the BOS token (Gemma's template writes it).
    """
    rendered = render(processor)
    bos = processor.tokenizer.bos_token
    add_special = not (bos is not None and rendered.startswith(bos))
    enc = processor(images=image, text=rendered, return_tensors="pt", add_special_tokens=add_special)
    msgs = messages()
    msgs[0]["content"][0]["image"] = image
    direct = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    assert torch.equal(direct["input_ids"], enc["input_ids"]), (direct["input_ids"], enc["input_ids"])
    assert torch.equal(direct["pixel_values"], enc["pixel_values"])
    return enc["input_ids"][0], enc["pixel_values"]


def image_features(model, pixel_values: torch.Tensor) -> torch.Tensor:
    cfg = model.config
    feats = model.model.get_image_features(
        pixel_values=pixel_values, vision_feature_layer=cfg.vision_feature_layer,
        vision_feature_select_strategy=cfg.vision_feature_select_strategy)
    if not torch.is_tensor(feats):
        feats = feats.pooler_output if hasattr(feats, "pooler_output") else feats[0]
    if isinstance(feats, (list, tuple)):
        feats = feats[0]
    return feats.reshape(-1, feats.shape[-1])


def forward(model, seq: torch.Tensor, pixel_values: torch.Tensor, n_prompt: int, **kwargs):
    """One forward over seq [S]; image features go to the image-token positions before n_prompt."""
    embeds = model.model.get_input_embeddings()(seq[None])
    feats = image_features(model, pixel_values)
    pos = ((seq == model.config.image_token_index) & (torch.arange(seq.shape[0]) < n_prompt)).nonzero().flatten()
    assert pos.shape[0] == feats.shape[0], (pos.shape, feats.shape)
    embeds = embeds.clone()
    embeds[0, pos] = feats.to(embeds.dtype)
    return model(inputs_embeds=embeds, **kwargs)


@torch.no_grad()
def make_reference(name, spec, model, processor, raw_tok, image: Image.Image, special: list[str],
                   expect_image_token_at: int | None = None) -> None:
    ref_dir = mf.FIX / "reference"
    ref_dir.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    image_id = cfg.image_token_index
    rendered = render(processor)
    input_ids, pixel_values = encode(processor, image)
    n_feat = int((input_ids == image_id).sum())
    raw = raw_tok.encode(rendered, add_special_tokens=not rendered.startswith(processor.tokenizer.bos_token or "\0")).ids
    expanded = []
    for t in raw:
        expanded.extend([t] * n_feat if t == image_id else [t])
    assert expanded == input_ids.tolist(), (expanded, input_ids.tolist())

    gen = model.generate(
        input_ids=input_ids[None], pixel_values=pixel_values, attention_mask=torch.ones_like(input_ids)[None],
        do_sample=False, max_new_tokens=MAX_NEW_TOKENS, min_new_tokens=MAX_NEW_TOKENS)
    output_ids = gen[0, input_ids.shape[0]:]
    n, t = input_ids.shape[0], output_ids.shape[0]
    if expect_image_token_at is not None:
        assert int(output_ids[expect_image_token_at]) == image_id, output_ids
    seq = torch.cat([input_ids, output_ids[:-1]])
    fwd = forward(model, seq, pixel_values, n, output_attentions=True, output_hidden_states=True)
    logits = fwd.logits[0]
    attentions = torch.stack([a[0] for a in fwd.attentions])  # [L,H,S,S]
    if not bool((output_ids[:-1] == image_id).any()):
        plain = model(input_ids=seq[None], pixel_values=pixel_values).logits[0]
        assert (plain - logits).abs().max() < 1e-5, "manual scatter differs from transformers' forward"
    prefill_last = forward(model, input_ids, pixel_values, n).logits[0, -1]
    argmax = logits[n - 1:].argmax(-1)
    assert torch.equal(argmax, output_ids), (argmax, output_ids)
    top2 = logits[n - 1:].topk(2, dim=-1).values
    min_margin = float((top2[:, 0] - top2[:, 1]).min())

    vout = model.model.vision_tower(pixel_values, output_attentions=True, output_hidden_states=True)
    vision_attn = torch.stack([a[0] for a in vout.attentions])  # [Lv,Hv,Pv,Pv]
    feats = image_features(model, pixel_values)
    vision_selected = vout.hidden_states[cfg.vision_feature_layer][0]

    improc = processor.image_processor
    bg = tuple(int(x * 255) for x in improc.image_mean)
    pad = improc(images=mf.expand2square(image, bg), return_tensors="pt")["pixel_values"][0]
    size = spec["vision"]["image_size"]
    resize_kw = {"do_center_crop": False} if has_cls(cfg) else {}
    resized = improc(images=image, size={"height": size, "width": size}, return_tensors="pt",
                     **resize_kw)["pixel_values"][0]

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
        "image_features": feats.float(),
    }
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    save_file(tensors, str(ref_dir / f"{name}.safetensors"))

    max_act = max(float(h.abs().max()) for h in fwd.hidden_states)
    tok = processor.tokenizer
    text_cfg, vis_cfg = cfg.text_config, cfg.vision_config
    cls = has_cls(cfg)
    meta = {
        "model": name,
        "family": {"decoder": text_cfg.model_type, "vision_tower": vis_cfg.model_type},
        "prompt": PROMPT,
        "messages": messages(),
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
        "vision_tokens": int(vision_attn.shape[-1]),
        "vision_has_cls": cls,
        "input_ids_unexpanded": raw,
        "input_ids": input_ids.tolist(),
        "output_ids": output_ids.tolist(),
        "input_tokens": tok.convert_ids_to_tokens(input_ids.tolist()),
        "output_tokens": tok.convert_ids_to_tokens(output_ids.tolist()),
        "output_text": tok.decode(output_ids.tolist(), skip_special_tokens=False),
        "output_text_skip_special": tok.decode(output_ids.tolist(), skip_special_tokens=True),
        "special_ids": {s: raw_tok.token_to_id(s) for s in special},
        "bos_prepended": bool(tok.bos_token) and int(input_ids[0]) == tok.convert_tokens_to_ids(tok.bos_token),
        "image_token_index": image_id,
        "output_positions_of_image_token": (output_ids == image_id).nonzero().flatten().tolist(),
        "vision_feature_layer": cfg.vision_feature_layer,
        "vision_feature_select_strategy": cfg.vision_feature_select_strategy,
        "sliding_window": getattr(text_cfg, "sliding_window", None),
        "head_dim": getattr(text_cfg, "head_dim", None),
        "pad_background_rgb": list(bg),
        "max_abs_hidden_state": max_act,
        "max_abs_logit": float(logits.abs().max()),
        "min_top1_top2_logit_margin": min_margin,
        "tensors": {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)}
                    for k, v in tensors.items()},
        "notes": [
            "logits/attentions come from ONE forward over input_ids + output_ids[:-1] (S positions); "
            "image features fill the image-token positions of input_ids only.",
            "attentions: decoder layers [L,H,S,S]; vision_attentions: all vision layers [Lv,Hv,Pv,Pv] "
            f"(Pv = {'P+1, CLS first' if cls else 'P, no CLS token'}).",
            "vision_selected_hidden: vision hidden_states[vision_feature_layer] (encoder output, before "
            "post_layernorm), [Pv, Dv]; image_features: projector output [F, D].",
            "prefill_logits_last: logits at position N-1 from a forward over input_ids only.",
            "pixel_values: the family's PIL-backend image processor "
            f"({'CLIP: shortest-edge bicubic resize, centre crop' if cls else 'SigLIP: bicubic resize to size, no crop'}).",
            "pixel_values_pad: expand2square with round-down(image_mean*255) background, then the processor.",
            "pixel_values_resize: resize straight to the model size (bicubic, aspect not kept), no crop.",
        ] + FAMILY_NOTES.get(text_cfg.model_type, []) + (IMGTOK_NOTE if expect_image_token_at is not None else []),
    }
    mf.dump(ref_dir / f"{name}.json", meta)
    print(f"{name}: N={n} T={t} out={meta['output_tokens']} max|h|={max_act:.1f} "
          f"max|logit|={meta['max_abs_logit']:.1f} margin={min_margin:.3f}")


FAMILY_NOTES = {
    "gemma": [
        "gemma: embeddings (token rows only, not the image features) are multiplied by sqrt(hidden_size) = 8 "
        "(transformers 5 scales inside the embedding module; 4.x scaled inputs_embeds, image features included).",
        "gemma: RMSNorm multiplies by (1 + weight); MLP is gelu_pytorch_tanh(gate) * up; config has the legacy "
        "hidden_act 'gelu', which transformers maps to gelu_pytorch_tanh for Gemma.",
        "gemma: head_dim 24 from the config (hidden 64 / 4 heads would be 16); one KV head; attention scale "
        "head_dim^-0.5; lm_head tied to embed_tokens (unscaled rows).",
        "gemma: the template writes <bos> itself, so no second BOS is added (as apply_chat_template(tokenize=True)).",
    ],
    "mistral": [
        "mistral: sliding_window 8: query i attends keys j with i - 8 < j <= i (8 keys at most), "
        "in prefill and in decode; S > 8, so most rows are windowed.",
    ],
    "qwen2": [
        "qwen2: q/k/v projections have biases, o_proj has none; rope_theta 1e6.",
        "qwen2: use_sliding_window is false, so sliding_window (4) is ignored: full causal attention.",
        "siglip: no CLS token, no pre-layernorm; features = hidden_states[-1] (last encoder layer, before "
        "post_layernorm), strategy full keeps all P = 16; feature j <-> vision token j.",
    ],
}

IMGTOK_NOTE = [
    "imgtok: greedy decoding emits the image-token id (3) at output index 2; transformers embeds it with "
    "embed_tokens as an ordinary token (no image features) and carries on.",
]
