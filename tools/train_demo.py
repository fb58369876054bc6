#!/usr/bin/env python3
"""Train lvlmscope's embedded demo model: a tiny LLaVA, from scratch, on synthetic scenes.

Run by hand (never by the build or CI); on 2 CPU cores this is the whole recipe of the shipped
model, from scratch, in under an hour (12 min vision stage + 44 min joint training, evaluations
included, then the full held-out check):

    cargo run --release --example make_scenes -- --out /tmp/scenes/train --n 60000 --seed 1 --objects
    cargo run --release --example make_scenes -- --out /tmp/scenes/test --n 1500 --seed 2 --masks --objects
    python3 tools/train_demo.py --train /tmp/scenes/train --test /tmp/scenes/test --out /tmp/m \
        --vision-minutes 12 --minutes 44 --aux-weight 0.5 --single-turn --echo-weight 1 \
        --word-weight 0.3 --repeat color:2 --repeat shape:2 --repeat is:2 --batch 8 --lr 1e-3 \
        --threads 2 --eval-every 8

The vision stage trains the vision tower alone on a per-patch colour/shape loss; the joint stage
trains everything on single-turn rows with three auxiliary losses whose heads are not saved: the
patch loss again (`--aux-weight`), the colour word at image positions on an object
(`--word-weight`), and the *echo* loss (`--echo-weight`), which makes the decoder state at the
answer position name the question's shape and colour words. Without the echo loss, colour
questions stall at chance given the number of objects: the question's shape word never reaches the
position that looks the object up in the image. `assets/demo-model.train.json` records the run.

The shipped model then had a second, short stage from that folder (`--init`): `--localize-weight 1
--localize-head 2:1` with `--echo-weight 1`, `--single-turn`, the same repeats, `--steps 1200 --lr
3e-4` stopped at its step-252 save, then `--steps 500 --lr 2e-4` from there. The localization loss
makes decoder head 1 of layer 2 attend, at the last prompt position, to the pixels of the object
the question names, whatever the kind of question, so that the demo has one localization head for
`eval --heads` to find (before it, the heads specialised by question kind). README "Demo model"
and `assets/demo-model.train.json` record it.

The minutes are wall-clock budgets, so a slower or busier machine trains fewer steps; there,
`--vision-steps 3392 --steps 4899` in place of the minutes runs as many steps as the shipped
model had (the learning rate then follows the step count instead of the clock).

The scenes and questions come from the Rust generator (`src/demo/scenes.rs`); this script does
not reimplement it. It builds a word-level tokenizer (Metaspace `▁` pre-tokenizer) over the
question/answer vocabulary, a LlavaForConditionalGeneration (CLIP ViT + mlp2x_gelu projector +
LLaMA decoder), trains it with the loss on the answer tokens and EOS only, reports held-out
exact-match accuracy per question type, and saves a Hugging Face llava folder (f32 weights).
"""

import argparse
import json
import math
import os
import random
import shutil
import time

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

IMAGE_SIZE = 64
PATCH = 8
NUM_PATCHES = (IMAGE_SIZE // PATCH) ** 2
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
UNK, BOS, EOS, PAD, IMAGE = range(5)
COLOUR_NAMES = ["red", "green", "blue", "yellow", "purple", "orange", "white"]
SHAPE_NAMES = ["circle", "square", "triangle", "star", "cross"]
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
# Works in Jinja2 and in minijinja (no Python string methods, no `generation` tag).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'] | upper }}{{ ': ' }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}{{ ' ' }}"
    "{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}{{ '<image>\n' }}{% endif %}{% endfor %}"
    "{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{{ ' ' }}{% endif %}{% endfor %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def prompt_text(question):
    """The LLaVA-1.5 prompt the chat template renders for one user turn with one image."""
    return f"USER: <image>\n{question} ASSISTANT:"


def pre_tokenizer():
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split("\n", "isolated"),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
            pre_tokenizers.Punctuation("isolated"),
        ]
    )


def build_tokenizer(texts):
    """A word-level tokenizer whose vocabulary is every pre-tokenized piece of `texts`."""
    pt = pre_tokenizer()
    pieces = set()
    for t in texts:
        for part in t.split("<image>"):
            pieces.update(p for p, _ in pt.pre_tokenize_str(part))
    vocab = {s: i for i, s in enumerate(SPECIALS)}
    for p in sorted(pieces):
        vocab.setdefault(p, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pt
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.add_special_tokens(SPECIALS)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", BOS)]
    )
    return tok


def read_jsonl(path):
    """Rows of a JSONL file; a cut-off last line (a generator stopped early) is skipped."""
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows


def load_rows(folder):
    return read_jsonl(os.path.join(folder, "questions.jsonl"))


def load_images(folder, names):
    """uint8 [n, 3, H, W] for the distinct image names, and name → index."""
    index = {n: i for i, n in enumerate(names)}
    arr = np.empty((len(names), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for n, i in index.items():
        im = np.asarray(Image.open(os.path.join(folder, n)).convert("RGB"))
        assert im.shape == (IMAGE_SIZE, IMAGE_SIZE, 3), f"{n} is {im.shape}"
        arr[i] = im.transpose(2, 0, 1)
    return torch.from_numpy(arr), index


def patch_cover(obj):
    """Per vision patch (row-major), how many of its pixels the object covers, from the object's
    row-major run-length mask (make_scenes' objects.jsonl)."""
    h, w = obj["mask"]["size"]
    bits = np.zeros(h * w, dtype=bool)
    pos, val = 0, False
    for c in obj["mask"]["counts"]:
        bits[pos : pos + c] = val
        pos, val = pos + c, not val
    side = IMAGE_SIZE // PATCH
    return bits.reshape(side, PATCH, side, PATCH).sum(axis=(1, 3)).reshape(-1)


def patch_labels(folder, image_index):
    """Per scene and vision patch, the colour and the shape (1-based; 0 = background) of the
    object that covers most of the patch, from make_scenes' objects.jsonl (--objects).
    A patch counts as an object's when that object covers at least a quarter of it."""
    colours, shapes = COLOUR_NAMES, SHAPE_NAMES
    col = torch.zeros((len(image_index), NUM_PATCHES), dtype=torch.long)
    shp = torch.zeros((len(image_index), NUM_PATCHES), dtype=torch.long)
    for row in read_jsonl(os.path.join(folder, "objects.jsonl")):
        i = image_index.get(row["image"])
        if i is None:
            continue
        best = np.zeros(NUM_PATCHES)
        for o in row["objects"]:
            cover = patch_cover(o)
            take = (cover >= PATCH * PATCH // 4) & (cover > best)
            best = np.where(take, cover, best)
            col[i, torch.from_numpy(take)] = colours.index(o["color"]) + 1
            shp[i, torch.from_numpy(take)] = shapes.index(o["shape"]) + 1
    return col, shp


def forward_with_features(model, ids, att, pix, lab):
    """The model's forward pass, done by hand so that the vision features the projector reads
    are also returned (for the auxiliary patch loss). Same computation as model(input_ids=…,
    pixel_values=…)."""
    feats = vision_features(model, pix)
    proj = model.model.multi_modal_projector(feats)
    embeds = model.model.get_input_embeddings()(ids)
    mask = (ids == IMAGE).unsqueeze(-1).expand_as(embeds)
    embeds = embeds.masked_scatter(mask, proj.to(embeds.dtype))
    out = model(inputs_embeds=embeds, attention_mask=att, labels=lab)
    return out, feats


def vision_features(model, pix):
    """The vision features the projector reads (patch tokens of the configured layer)."""
    vt = model.model.vision_tower(pix, output_hidden_states=True)
    return vt.hidden_states[model.config.vision_feature_layer][:, 1:]


def patch_loss(heads, feats, col, shp):
    """Cross-entropy of the auxiliary per-patch colour and shape heads."""
    ce = torch.nn.functional.cross_entropy
    return ce(heads["color"](feats).flatten(0, 1), col.flatten()) + ce(
        heads["shape"](feats).flatten(0, 1), shp.flatten()
    )


@torch.no_grad()
def patch_accuracy(model, heads, images, col, shp, batch=256):
    """Per-patch colour and shape accuracy of the auxiliary heads on object patches."""
    model.eval()
    hits = {"color": 0, "shape": 0}
    total = 0
    for i in range(0, len(images), batch):
        feats = vision_features(model, normalise(images[i : i + batch]))
        on = shp[i : i + batch] > 0
        total += int(on.sum())
        for name, lab in (("color", col), ("shape", shp)):
            pred = heads[name](feats).argmax(-1)
            hits[name] += int(((pred == lab[i : i + batch]) & on).sum())
    model.train()
    return {k: v / max(total, 1) for k, v in hits.items()}


class Budget:
    """A stage's length: wall-clock minutes, or a fixed number of steps when `steps` > 0 (the
    same schedule on any machine). `frac` is how far the stage is, for the learning-rate curve."""

    def __init__(self, minutes, steps):
        self.seconds, self.steps, self.start = minutes * 60.0, steps, time.time()

    def elapsed(self):
        return time.time() - self.start

    def frac(self, step):
        return step / self.steps if self.steps > 0 else self.elapsed() / self.seconds

    def done(self, step):
        return self.frac(step) >= 1.0


def pretrain_vision(model, heads, images, col, shp, test, args):
    """Stage 1: the vision tower alone learns per-patch colour and shape (the auxiliary heads),
    which is far cheaper per step than the whole model and is what the questions hinge on."""
    params = list(model.model.vision_tower.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=args.vision_lr, weight_decay=0.01, betas=(0.9, 0.98))
    budget = Budget(args.vision_minutes, args.vision_steps)
    last_eval = budget.start
    step, ema = 0, None
    gen = torch.Generator().manual_seed(args.seed)
    while not budget.done(step):
        frac = budget.frac(step)
        lr = args.vision_lr * min(1.0, (step + 1) / 100) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, len(images), (args.vision_batch,), generator=gen)
        loss = patch_loss(heads, vision_features(model, normalise(images[idx])), col[idx], shp[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % 50 == 0:
            print(f"vision step {step} loss {ema:.4f} lr {lr:.2e} t {budget.elapsed() / 60:.1f}m", flush=True)
        if time.time() - last_eval > args.eval_every * 60 and test is not None:
            acc = patch_accuracy(model, heads, *test)
            print(f"vision eval step {step}: " + " ".join(f"{k} {v:.3f}" for k, v in acc.items()), flush=True)
            last_eval = time.time()
    if test is not None:
        acc = patch_accuracy(model, heads, *test)
        print(f"vision done, {step} steps: " + " ".join(f"{k} {v:.3f}" for k, v in acc.items()), flush=True)


def forward_single_turn(model, ids, att, pix, row_image, lab, attentions=False):
    """Single-turn rows that share images: the vision tower and projector run once per distinct
    image (`pix`), row r reads image `row_image[r]`. Same computation as model(input_ids=…,
    pixel_values=pix[row_image])."""
    feats = vision_features(model, pix)
    proj = model.model.multi_modal_projector(feats)[row_image]
    embeds = model.model.get_input_embeddings()(ids)
    mask = (ids == IMAGE).unsqueeze(-1).expand_as(embeds)
    embeds = embeds.masked_scatter(mask, proj.to(embeds.dtype))
    out = model(
        inputs_embeds=embeds,
        attention_mask=att,
        labels=lab,
        output_hidden_states=True,
        output_attentions=attentions,
    )
    return out, feats


def localize_loss(out, ids, lab, covers, layer, head):
    """Cross-entropy between the asked-about object's pixels over the vision patches (the
    target distribution, proportional to each patch's object pixels) and decoder head
    (`layer`, `head`)'s attention over the image at the last prompt position (where the first
    answer token is read), renormalised over the image. Rows whose question names no object are
    left out. It gives the demo one decoder head that looks at the object the question is about,
    whatever the kind of question: a localization head for `eval --heads` to find."""
    has = covers.sum(-1) > 0
    if not bool(has.any()):
        return torch.zeros(())
    last = (lab != -100).int().argmax(-1) - 1
    first = int((ids[0] == IMAGE).nonzero()[0])
    rows = torch.arange(len(ids))
    att = out.attentions[layer][rows, head, last, first : first + NUM_PATCHES]
    p = att / att.sum(-1, keepdim=True).clamp_min(1e-12)
    q = covers / covers.sum(-1, keepdim=True).clamp_min(1.0)
    return -(q * torch.log(p + 1e-9)).sum(-1)[has].mean()


def echo_loss(heads, out, ids, lab, words, layer):
    """Cross-entropy of linear heads that read, from the decoder's hidden state after `layer`
    layers at the last prompt position (where the answer is produced), the shape and the
    colour the question names (-100 when it names none). It makes the decoder carry the
    question's key words to where the answer is read off the image."""
    last = (lab != -100).int().argmax(-1) - 1
    hidden = out.hidden_states[layer][torch.arange(len(ids)), last]
    loss = torch.zeros(())
    for name, table in words.items():
        named = table[ids].max(-1).values
        if (named >= 0).any():
            loss = loss + torch.nn.functional.cross_entropy(heads[name](hidden), named, ignore_index=-100)
    return loss


def single_turn_batch(scenes, idx, images, repeats):
    """Every question of the scenes `idx` as its own single-turn row (the inference prompt),
    the distinct images once; a question whose first prompt token after the image is in
    `repeats` (token id → count) appears that many times. Also returns per row the asked-about
    object's pixel count per vision patch (zeros when the question names no object)."""
    items, row_image, covers = [], [], []
    for k, i in enumerate(idx):
        for first, _, ans, cover in scenes[i]:
            word = first[first.index(IMAGE) + NUM_PATCHES + 2]
            for _ in range(repeats.get(word, 1)):
                items.append((first + ans, [-100] * len(first) + ans, i))
                row_image.append(k)
                covers.append(np.zeros(NUM_PATCHES) if cover is None else cover)
    ids, lab, att, _ = batchify(items, images)
    covers = torch.from_numpy(np.stack(covers)).float()
    return ids, lab, att, normalise(images[list(idx)]), torch.tensor(row_image), covers


def normalise(images_u8):
    x = images_u8.float() / 255.0
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def encode_rows(tok, rows, image_index):
    """(input_ids, labels, image idx) per row; the image token expanded to NUM_PATCHES ids."""
    out = []
    for r in rows:
        ids = tok.encode(prompt_text(r["question"])).ids
        at = ids.index(IMAGE)
        ids = ids[:at] + [IMAGE] * NUM_PATCHES + ids[at + 1 :]
        ans = tok.encode(" " + r["answer"], add_special_tokens=False).ids
        # The answer's pieces must match how the full text tokenizes (checked once here).
        full = tok.encode(prompt_text(r["question"]) + " " + r["answer"]).ids
        assert full[-len(ans) :] == ans and UNK not in ans, r
        seq = ids + ans + [EOS]
        labels = [-100] * len(ids) + ans + [EOS]
        out.append((seq, labels, image_index[r["image"]]))
    return out


def encode_turns(tok, rows, image_index, covers=None):
    """Per scene: a list of (first-turn ids, later-turn ids, answer ids + EOS, cover), where
    cover is the asked-about object's pixel count per vision patch (`patch_cover`) when
    `covers` (image name → per-object covers, from `object_covers`) is given and the question
    names an object, else None.

    Training packs all questions of a scene into one multi-turn conversation in random order
    ("USER: <image>\nQ1 ASSISTANT: A1</s>USER: Q2 ASSISTANT: A2</s>…"): the image and the
    decoder's pass over its tokens are shared by several supervised answers. The first turn is
    exactly the single-turn prompt used at inference, and every question type comes first in
    turn.
    """
    scenes = {}
    for r in rows:
        first = tok.encode(prompt_text(r["question"])).ids
        at = first.index(IMAGE)
        first = first[:at] + [IMAGE] * NUM_PATCHES + first[at + 1 :]
        later = tok.encode(f"USER: {r['question']} ASSISTANT:", add_special_tokens=False).ids
        ans = tok.encode(" " + r["answer"], add_special_tokens=False).ids + [EOS]
        assert UNK not in later and UNK not in ans, r
        cover = None
        if covers is not None and r.get("object") is not None and r["image"] in covers:
            cover = covers[r["image"]][r["object"]]
        scenes.setdefault(image_index[r["image"]], []).append((first, later, ans, cover))
    return scenes


def object_covers(folder):
    """Image name → per object (in objects.jsonl order) its pixel count per vision patch."""
    return {
        row["image"]: [patch_cover(o) for o in row["objects"]]
        for row in read_jsonl(os.path.join(folder, "objects.jsonl"))
    }


def pack(scene_turns, img, rng):
    """One training conversation (ids, labels, image idx) from a scene's questions."""
    turns = list(scene_turns)
    rng.shuffle(turns)
    ids, labels = [], []
    for k, (first, later, ans, _) in enumerate(turns):
        prompt = first if k == 0 else later
        ids += prompt + ans
        labels += [-100] * len(prompt) + ans
    return ids, labels, img


def batchify(items, images):
    n = max(len(s) for s, _, _ in items)
    ids = torch.full((len(items), n), PAD, dtype=torch.long)
    lab = torch.full((len(items), n), -100, dtype=torch.long)
    att = torch.zeros((len(items), n), dtype=torch.long)
    for i, (s, l, _) in enumerate(items):
        ids[i, : len(s)] = torch.tensor(s)
        lab[i, : len(l)] = torch.tensor(l)
        att[i, : len(s)] = 1
    pix = normalise(images[[img for _, _, img in items]])
    return ids, lab, att, pix


def build_model(vocab_size, args):
    vc = CLIPVisionConfig(
        hidden_size=args.vision_width,
        intermediate_size=4 * args.vision_width,
        num_hidden_layers=args.vision_layers,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=PATCH,
        projection_dim=args.vision_width,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    tc = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=args.text_width,
        intermediate_size=args.text_mlp,
        num_hidden_layers=args.text_layers,
        num_attention_heads=4,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
        tie_word_embeddings=False,
    )
    cfg = LlavaConfig(
        vision_config=vc,
        text_config=tc,
        image_token_index=IMAGE,
        image_seq_length=NUM_PATCHES,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        multimodal_projector_bias=True,
        tie_word_embeddings=False,
    )
    return LlavaForConditionalGeneration(cfg)


@torch.no_grad()
def evaluate(model, data, rows, images, batch=128):
    """Exact-match accuracy per question type: every answer token and EOS is the argmax
    (i.e. what greedy decoding would produce)."""
    model.eval()
    correct, total = {}, {}
    for i in range(0, len(data), batch):
        chunk = data[i : i + batch]
        ids, lab, att, pix = batchify(chunk, images)
        logits = model(input_ids=ids, attention_mask=att, pixel_values=pix).logits
        pred = logits[:, :-1].argmax(-1)
        tgt = lab[:, 1:]
        ok = ((pred == tgt) | (tgt == -100)).all(-1)
        for j, good in enumerate(ok.tolist()):
            t = rows[i + j]["type"]
            total[t] = total.get(t, 0) + 1
            correct[t] = correct.get(t, 0) + int(good)
    model.train()
    return {t: correct[t] / total[t] for t in sorted(total)}, total


def legacy_key(k):
    """Current transformers parameter name → legacy llava-hf checkpoint name."""
    for cur, old in [
        ("model.vision_tower.", "vision_tower.vision_model."),
        ("model.multi_modal_projector.", "multi_modal_projector."),
        ("model.language_model.", "language_model.model."),
        ("lm_head.", "language_model.lm_head."),
    ]:
        if k.startswith(cur):
            return old + k[len(cur) :]
    raise KeyError(f"unexpected parameter {k}")


def save_folder(model, tok, out):
    tmp = out.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    for extra in os.listdir(tmp):
        if extra not in ("config.json", "generation_config.json"):
            os.remove(os.path.join(tmp, extra))
    # Weights in the legacy llava-hf key layout (what the llava-1.5 checkpoints use).
    sd = {legacy_key(k): v.detach().float().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    # Keep the llava-hf key names in config.json that readers look for.
    with open(os.path.join(tmp, "config.json")) as f:
        cfg = json.load(f)
    cfg["image_token_index"] = IMAGE
    cfg.setdefault("architectures", ["LlavaForConditionalGeneration"])
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
    gen = {
        "bos_token_id": BOS,
        "eos_token_id": EOS,
        "pad_token_id": PAD,
        "do_sample": False,
        "max_new_tokens": 8,
    }
    with open(os.path.join(tmp, "generation_config.json"), "w") as f:
        json.dump(gen, f, indent=2)
    tok.save(os.path.join(tmp, "tokenizer.json"))
    tok_cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "add_bos_token": True,
        "add_eos_token": False,
        "model_max_length": 256,
        "padding_side": "left",
        "chat_template": CHAT_TEMPLATE,
        "extra_special_tokens": {"image_token": "<image>"},
        "added_tokens_decoder": {
            str(i): {
                "content": s,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for i, s in enumerate(SPECIALS)
        },
    }
    with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
        json.dump(tok_cfg, f, indent=2)
    pre = {
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": IMAGE_SIZE},
        "resample": 3,
        "do_center_crop": True,
        "crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD,
        "do_convert_rgb": True,
    }
    with open(os.path.join(tmp, "preprocessor_config.json"), "w") as f:
        json.dump(pre, f, indent=2)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=30.0, help="wall-clock training budget")
    ap.add_argument(
        "--steps",
        type=int,
        default=0,
        help="train this many joint steps instead of --minutes (the same run on any machine)",
    )
    ap.add_argument("--batch", type=int, default=16, help="scenes (conversations) per step")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vision-layers", type=int, default=4)
    ap.add_argument("--vision-width", type=int, default=128)
    ap.add_argument("--text-layers", type=int, default=4)
    ap.add_argument("--text-width", type=int, default=192)
    ap.add_argument("--text-mlp", type=int, default=384)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument(
        "--aux-weight",
        type=float,
        default=0.0,
        help="weight of an auxiliary loss on the vision features: per-patch colour and shape "
        "of the covering object (needs make_scenes --objects); its heads are not saved",
    )
    ap.add_argument(
        "--vision-minutes",
        type=float,
        default=0.0,
        help="minutes of stage 1 before the joint training: the vision tower alone on the "
        "auxiliary patch loss (needs --objects scenes; the test folder's objects.jsonl, when "
        "present, gives a held-out patch accuracy)",
    )
    ap.add_argument(
        "--vision-steps", type=int, default=0, help="this many vision steps instead of --vision-minutes"
    )
    ap.add_argument("--vision-lr", type=float, default=1e-3)
    ap.add_argument("--vision-batch", type=int, default=64)
    ap.add_argument(
        "--single-turn",
        action="store_true",
        help="every question its own single-turn row (the scene's image encoded once) instead of "
        "one packed conversation per scene, where later turns can read answers off earlier ones",
    )
    ap.add_argument(
        "--repeat",
        action="append",
        default=[],
        metavar="WORD:N",
        help="with --single-turn, show questions whose second word is WORD (color, shape, is, "
        "how, where … lower-cased question words) N times per step, e.g. color:3",
    )
    ap.add_argument(
        "--word-weight",
        type=float,
        default=0.0,
        help="with --single-turn and --aux-weight: weight of a loss that makes the decoder's "
        "output at each image position on an object the word of that object's colour, so that a "
        "position the answer attends to carries its colour word",
    )
    ap.add_argument(
        "--echo-weight",
        type=float,
        default=0.0,
        help="with --single-turn: weight of a loss that makes the decoder's state at the last "
        "prompt position (after --echo-layer layers) name the question's shape and colour words",
    )
    ap.add_argument("--echo-layer", type=int, default=2)
    ap.add_argument(
        "--localize-weight",
        type=float,
        default=0.0,
        help="with --single-turn: weight of a loss that makes decoder head --localize-head attend, "
        "at the last prompt position, to the pixels of the object the question is about "
        "(needs make_scenes --objects scenes)",
    )
    ap.add_argument("--localize-head", default="2:1", metavar="LAYER:HEAD")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--init", help="continue from a saved demo model folder (its tokenizer too)")
    ap.add_argument("--eval-every", type=float, default=5.0, help="minutes between evaluations")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)

    train_rows, test_rows = load_rows(args.train), load_rows(args.test)
    if args.aux_weight > 0:
        # Only scenes whose objects are listed (the generator may have been stopped early).
        labelled = {r["image"] for r in read_jsonl(os.path.join(args.train, "objects.jsonl"))}
        train_rows = [r for r in train_rows if r["image"] in labelled]
    texts = [prompt_text(r["question"]) + " " + r["answer"] for r in train_rows + test_rows]
    if args.init:
        tok = Tokenizer.from_file(os.path.join(args.init, "tokenizer.json"))
    else:
        tok = build_tokenizer(texts)
    print(f"vocab {tok.get_vocab_size()}", flush=True)

    t0 = time.time()
    train_imgs, train_idx = load_images(args.train, sorted({r["image"] for r in train_rows}))
    test_imgs, test_idx = load_images(args.test, sorted({r["image"] for r in test_rows}))
    covers = object_covers(args.train) if args.localize_weight > 0 else None
    train = encode_turns(tok, train_rows, train_idx, covers)
    test = encode_rows(tok, test_rows, test_idx)
    print(
        f"{len(train_rows)} train questions on {len(train_imgs)} scenes, {len(test)} test questions "
        f"on {len(test_imgs)} scenes; loaded in {time.time() - t0:.0f}s",
        flush=True,
    )
    # A fixed held-out subset for the periodic evaluations (the whole test set at the end).
    probe = list(range(0, len(test), max(1, len(test) // 1000)))

    if args.init:
        model = LlavaForConditionalGeneration.from_pretrained(args.init, dtype=torch.float32)
        model.train()
    else:
        model = build_model(tok.get_vocab_size(), args)
    if args.localize_weight > 0:
        # The loss reads attention probabilities, which only the eager implementation returns.
        model.set_attn_implementation("eager")
    loc_layer, loc_head = (int(v) for v in args.localize_head.split(":"))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{n_params} parameters ({4 * n_params / 2**20:.1f} MiB in f32)", flush=True)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    if args.aux_weight > 0:
        aux_col, aux_shp = patch_labels(args.train, train_idx)
        vw = model.config.vision_config.hidden_size
        heads = torch.nn.ModuleDict({"color": torch.nn.Linear(vw, 8), "shape": torch.nn.Linear(vw, 6)})
        no_decay += list(heads.parameters())
        print(f"aux patch loss x{args.aux_weight}: {(aux_col > 0).float().mean():.3f} of patches on objects", flush=True)
        if args.vision_minutes > 0 or args.vision_steps > 0:
            test_objects = os.path.join(args.test, "objects.jsonl")
            held_out = None
            if os.path.exists(test_objects):
                held_out = (test_imgs, *patch_labels(args.test, test_idx))
            pretrain_vision(model, heads, train_imgs, aux_col, aux_shp, held_out, args)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.98),
    )
    # Per aux colour label (0 = background), the token id of the colour's word.
    colour_words = torch.tensor(
        [-100] + [tok.token_to_id("▁" + c) for c in COLOUR_NAMES]
    )
    # Per token id, the index of the shape / colour it names (-100 for other tokens).
    echo_words = {}
    for name, names in (("shape", SHAPE_NAMES), ("color", COLOUR_NAMES)):
        table = torch.full((tok.get_vocab_size(),), -100, dtype=torch.long)
        for k, w in enumerate(names):
            table[tok.token_to_id("▁" + w)] = k
        echo_words[name] = table
    echo_heads = torch.nn.ModuleDict(
        {n: torch.nn.Linear(model.config.text_config.hidden_size, len(t)) for n, t in (("shape", SHAPE_NAMES), ("color", COLOUR_NAMES))}
    )
    if args.echo_weight > 0:
        opt.add_param_group({"params": list(echo_heads.parameters()), "weight_decay": 0.0})
    repeats = {}
    for spec in args.repeat:
        word, n = spec.split(":")
        repeats[tok.token_to_id("▁" + word)] = int(n)
    budget = Budget(args.minutes, args.steps)
    warmup = 200
    aux = torch.zeros(())
    echo = torch.zeros(())
    loc = torch.zeros(())
    last_eval = budget.start
    step, seen, ema = 0, 0, None
    order = []
    scene_ids = sorted(train)
    rng = random.Random(args.seed)
    while not budget.done(step):
        elapsed = budget.elapsed()
        if not order:
            order = list(scene_ids)
            rng.shuffle(order)
        idx, order = order[: args.batch], order[args.batch :]
        frac = budget.frac(step)
        lr = args.lr * min(1.0, (step + 1) / warmup) * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        if args.single_turn:
            ids, lab, att, pix, row_image, covers = single_turn_batch(train, idx, train_imgs, repeats)
            out, feats = forward_single_turn(
                model, ids, att, pix, row_image, lab, attentions=args.localize_weight > 0
            )
            loss = out.loss
            if args.localize_weight > 0:
                loc = localize_loss(out, ids, lab, covers, loc_layer, loc_head)
                loss = loss + args.localize_weight * loc
            if args.word_weight > 0:
                first_image = int((ids[0] == IMAGE).nonzero()[0])
                words = colour_words[aux_col[idx][row_image]]
                loss = loss + args.word_weight * torch.nn.functional.cross_entropy(
                    out.logits[:, first_image : first_image + NUM_PATCHES].flatten(0, 1), words.flatten()
                )
            if args.aux_weight > 0:
                aux = patch_loss(heads, feats, aux_col[idx], aux_shp[idx])
                loss = loss + args.aux_weight * aux
            if args.echo_weight > 0:
                echo = echo_loss(echo_heads, out, ids, lab, echo_words, args.echo_layer)
                loss = loss + args.echo_weight * echo
        elif args.aux_weight > 0:
            ids, lab, att, pix = batchify([pack(train[i], i, rng) for i in idx], train_imgs)
            out, feats = forward_with_features(model, ids, att, pix, lab)
            aux = patch_loss(heads, feats, aux_col[idx], aux_shp[idx])
            loss = out.loss + args.aux_weight * aux
        else:
            ids, lab, att, pix = batchify([pack(train[i], i, rng) for i in idx], train_imgs)
            loss = model(input_ids=ids, attention_mask=att, pixel_values=pix, labels=lab).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        seen += sum(len(train[i]) for i in idx)
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % 100 == 0:
            print(f"step {step} seen {seen} loss {ema:.4f} aux {aux.item():.3f} echo {echo.item():.3f} loc {loc.item():.3f} lr {lr:.2e} t {elapsed / 60:.1f}m", flush=True)
        if time.time() - last_eval > args.eval_every * 60:
            acc, _ = evaluate(model, [test[i] for i in probe], [test_rows[i] for i in probe], test_imgs)
            print(f"eval step {step}: " + " ".join(f"{t} {a:.3f}" for t, a in acc.items()), flush=True)
            save_folder(model, tok, args.out)
            last_eval = time.time()
    train_time = budget.elapsed()
    print(f"trained {step} steps, {seen} questions, {train_time / 60:.1f} min", flush=True)

    acc, totals = evaluate(model, test, test_rows, test_imgs)
    report = {
        "train_minutes": round(train_time / 60, 2),
        "steps": step,
        "questions_seen": seen,
        "train_questions": len(train_rows),
        "train_scenes": len(train_imgs),
        "parameters": n_params,
        "held_out_accuracy": {t: round(a, 4) for t, a in acc.items()},
        "held_out_questions": totals,
    }
    print(json.dumps(report, indent=2), flush=True)
    save_folder(model, tok, args.out)
    with open(args.out.rstrip("/") + ".train.json", "w") as f:
        json.dump(report, f, indent=2)
    print(f"saved {args.out}", flush=True)


if __name__ == "__main__":
    main()
