"""transformers reference of a two-turn conversation on committed fixtures (issue 18).

For each fixture: turn 1 renders [user(image, Q1)] through the chat template with the generation
prompt and decodes greedily; its answer text is `decode(ids, skip_special_tokens=True)`. Turn 2
renders [user(image, Q1), assistant(A1), user(Q2)] the same way (the first answer included), runs
from scratch (no cache: what transformers does for a new `generate` call) and decodes greedily;
one eager forward over turn 2's input ids + its answer but the last token gives the answer's
attention rows. Writes tests/fixtures/reference/conversation.json (read by
tests/conversations.rs):

  {"<fixture>": {"prompts", "rendered_turn2", "input_ids_turn1", "output_ids_turn1",
                 "answer_text_turn1", "input_ids_turn2", "output_ids_turn2",
                 "attention_turn2": [T2][L][H][S2]}}

tiny-llava-gqa's template re-tokenises the first answer as it was generated (lvlmscope continues
from its KV cache); tiny-llava-mistral's does not (lvlmscope runs turn 2 afresh): both must give
these numbers. tiny-qwen2-vl checks the M-RoPE positions of a second turn (transformers'
get_rope_index over the whole conversation; the attention forward gives it the position ids it
computes for input + answer), tiny-llava-next a LLaVA-NeXT conversation (the image features once,
the conversation's text after). Run from the repository root:
`python tools/conversation_reference.py`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
PROMPTS = ["What is in the picture?", "What colour is the square?"]
MAX_NEW_TOKENS = 5
FIXTURES = ["tiny-llava-gqa", "tiny-llava-mistral", "tiny-qwen2-vl", "tiny-llava-next"]


def load(name: str):
    """(model, processor) of a fixture folder, eager attention, f32."""
    if name.startswith("tiny-qwen2"):
        import make_qwen_vl_fixtures as mq

        spec = mq.SPECS[name]
        model = mq.model_class(spec).from_pretrained(
            str(FIX / name), attn_implementation="eager", dtype=torch.float32).eval()
        return model, mq.make_processor(FIX / name)
    if name in ("tiny-llava-next", "tiny-llava-onevision"):
        import make_anyres_fixtures as ma

        spec = ma.SPECS[name]
        model = ma.model_class(spec).from_pretrained(
            str(FIX / name), attn_implementation="eager", dtype=torch.float32).eval()
        template = json.loads((FIX / name / "chat_template.json").read_text())["chat_template"]
        return model, ma.make_processor(FIX / name, spec, template)
    return load_llava(name)


def load_llava(name: str):
    from transformers import (
        CLIPImageProcessorPil,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    folder = FIX / name
    model = LlavaForConditionalGeneration.from_pretrained(
        str(folder), attn_implementation="eager", dtype=torch.float32).eval()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(folder))
    template_file = folder / "chat_template.json"
    if template_file.exists():
        template = json.loads(template_file.read_text())["chat_template"]
    else:
        template = json.loads((folder / "tokenizer_config.json").read_text())["chat_template"]
    processor_cfg = json.loads((folder / "processor_config.json").read_text())
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil.from_pretrained(str(folder)), tokenizer=tokenizer,
        patch_size=processor_cfg["patch_size"],
        vision_feature_select_strategy=processor_cfg["vision_feature_select_strategy"],
        chat_template=template,
        num_additional_image_tokens=processor_cfg["num_additional_image_tokens"],
    )
    return model, processor


def encode(processor, messages, image):
    """The rendered text, input ids [N] and the image inputs the model takes (pixel values, and
    image_sizes or image_grid_thw)."""
    rendered = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    bos = processor.tokenizer.bos_token
    add_special = not (bos is not None and rendered.startswith(bos))
    enc = processor(images=image, text=rendered, return_tensors="pt", add_special_tokens=add_special)
    images = {k: enc[k] for k in ("pixel_values", "image_sizes", "image_grid_thw") if k in enc}
    return rendered, enc["input_ids"][0], images


def greedy(model, input_ids, images):
    extra = {}
    if "image_grid_thw" in images:
        import qwen_vl_common as qc

        extra["mm_token_type_ids"] = qc.mm_token_type_ids(model, input_ids, input_ids.shape[0])[None]
    gen = model.generate(input_ids=input_ids[None], attention_mask=torch.ones_like(input_ids)[None],
                         do_sample=False, max_new_tokens=MAX_NEW_TOKENS, **images, **extra)
    return gen[0, input_ids.shape[0]:]


def attention(model, seq, n_prompt, images):
    """Logits [S, V] and per-layer attention [L, H, S, S] of one eager forward over seq."""
    if "image_grid_thw" in images:
        import qwen_vl_common as qc

        fwd = qc.forward(model, seq, images["pixel_values"], images["image_grid_thw"], n_prompt)
        return fwd["logits"], torch.stack([a[0] for a in fwd["dec"]])
    fwd = model(input_ids=seq[None], output_attentions=True, **images)
    return fwd.logits[0], torch.stack([a[0] for a in fwd.attentions])


@torch.no_grad()
def reference(name: str, image: Image.Image) -> dict:
    model, processor = load(name)
    tok = processor.tokenizer
    first = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPTS[0]}]}]
    _, ids1, pixels = encode(processor, first, image)
    out1 = greedy(model, ids1, pixels)
    answer1 = tok.decode(out1.tolist(), skip_special_tokens=True)
    second = first + [
        {"role": "assistant", "content": [{"type": "text", "text": answer1}]},
        {"role": "user", "content": [{"type": "text", "text": PROMPTS[1]}]},
    ]
    rendered2, ids2, pixels2 = encode(processor, second, image)
    assert all(torch.equal(pixels[k], pixels2[k]) for k in pixels)
    out2 = greedy(model, ids2, pixels)
    n2, t2 = ids2.shape[0], out2.shape[0]
    seq = torch.cat([ids2, out2[:-1]])
    logits, attn = attention(model, seq, n2, pixels)  # [S, V], [L, H, S, S]
    rows = attn[:, :, n2 - 1:n2 - 1 + t2, :].permute(2, 0, 1, 3)  # [T, L, H, S]
    assert torch.equal(logits[n2 - 1:].argmax(-1), out2)
    return {
        "prompts": PROMPTS,
        "max_new_tokens": MAX_NEW_TOKENS,
        "rendered_turn2": rendered2,
        "input_ids_turn1": ids1.tolist(),
        "output_ids_turn1": out1.tolist(),
        "answer_text_turn1": answer1,
        "input_ids_turn2": ids2.tolist(),
        "output_ids_turn2": out2.tolist(),
        "attention_turn2": rows.tolist(),
    }


def main() -> int:
    image = Image.open(FIX / "image.png").convert("RGB")
    out = {name: reference(name, image) for name in FIXTURES}
    path = FIX / "reference" / "conversation.json"
    path.write_text(json.dumps(out) + "\n")
    print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
