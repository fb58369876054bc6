#!/usr/bin/env python3
"""Check the trained demo model with transformers and pick the shipped demo scenes.

Run by hand after tools/train_demo.py:

    cargo run --release --example make_scenes -- --out /tmp/scenes/demo --n 200 --seed 3 --masks
    python3 tools/demo_scenes.py --model assets/demo-model --scenes /tmp/scenes/demo \
        --out assets/demo-scenes --per-type 2

It reloads the saved folder the way a user would (AutoTokenizer with its chat template,
AutoImageProcessor, LlavaForConditionalGeneration), answers every question of the scene set by
greedy generation, prints the accuracy per question type, and copies `--per-type` scenes of each
question type that the model answers correctly into `--out` as `scene_<k>.png` plus one
`scenes.json` (question, answer, type, target object, its row-major RLE mask, and the prompt ids
transformers built, so Rust can check its own tokenisation).
"""

import argparse
import json
import os
import shutil

import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoTokenizer, LlavaForConditionalGeneration

TYPES = ["color", "shape", "exists", "count", "where"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--scenes", required=True, help="a make_scenes --masks output folder")
    ap.add_argument("--out", help="where to write the demo scenes (omit to only check)")
    ap.add_argument("--per-type", type=int, default=2)
    ap.add_argument("--limit", type=int, default=1000, help="questions to check")
    args = ap.parse_args()
    torch.set_num_threads(1)

    tok = AutoTokenizer.from_pretrained(args.model)
    proc = AutoImageProcessor.from_pretrained(args.model)
    model = LlavaForConditionalGeneration.from_pretrained(args.model).eval()
    cfg = model.config
    n_img = cfg.image_seq_length
    image_id = cfg.image_token_index

    with open(os.path.join(args.scenes, "questions.jsonl")) as f:
        rows = [json.loads(line) for line in f][: args.limit]

    correct, total, picked = {}, {}, []
    used_images = set()
    for r in rows:
        messages = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": r["question"]}]}
        ]
        prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        expected_prompt = f"USER: <image>\n{r['question']} ASSISTANT:"
        assert prompt == expected_prompt, (prompt, expected_prompt)
        ids = tok(prompt).input_ids
        at = ids.index(image_id)
        ids = ids[:at] + [image_id] * n_img + ids[at + 1 :]
        image = Image.open(os.path.join(args.scenes, r["image"])).convert("RGB")
        pix = proc(images=image, return_tensors="pt").pixel_values
        with torch.no_grad():
            out = model.generate(
                input_ids=torch.tensor([ids]),
                pixel_values=pix,
                max_new_tokens=6,
                do_sample=False,
            )
        gen = out[0, len(ids) :].tolist()
        answer = tok.decode(gen, skip_special_tokens=True).strip()
        ok = answer == r["answer"] and gen[-1] == tok.eos_token_id
        t = r["type"]
        total[t] = total.get(t, 0) + 1
        correct[t] = correct.get(t, 0) + int(ok)
        n_of_type = sum(1 for p in picked if p["type"] == t)
        if ok and n_of_type < args.per_type and r["image"] not in used_images:
            used_images.add(r["image"])
            picked.append({**r, "prompt_ids": ids, "output_ids": gen})

    acc = {t: round(correct[t] / total[t], 4) for t in TYPES if t in total}
    print(json.dumps({"accuracy": acc, "questions": total}, indent=2))

    if args.out:
        os.makedirs(args.out, exist_ok=True)
        entries = []
        picked.sort(key=lambda p: TYPES.index(p["type"]))
        for k, p in enumerate(picked):
            name = f"scene_{k}"
            shutil.copyfile(os.path.join(args.scenes, p["image"]), os.path.join(args.out, name + ".png"))
            entries.append(
                {
                    "name": name,
                    "image": name + ".png",
                    "question": p["question"],
                    "answer": p["answer"],
                    "type": p["type"],
                    "object": p["object"],
                    "mask": p.get("mask"),
                    "prompt_ids": p["prompt_ids"],
                    "output_ids": p["output_ids"],
                }
            )
        with open(os.path.join(args.out, "scenes.json"), "w") as f:
            json.dump(entries, f, indent=1)
        print(f"wrote {len(entries)} scenes to {args.out}")


if __name__ == "__main__":
    main()
