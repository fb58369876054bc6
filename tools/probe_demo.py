#!/usr/bin/env python3
"""Probe a demo model: does the answer position know what a colour question asks about?

Run by hand (never by the build or CI), on scenes written by `make_scenes --objects`:

    python3 tools/probe_demo.py --model assets/demo-model --train /tmp/scenes/train \
        --test /tmp/scenes/test

For colour questions on scenes with two or more objects it prints the greedy accuracy, the share of
each decoder head's attention (at the last prompt position) that goes to the image and, of that,
to the asked-about object's patches, and the held-out accuracy of linear probes that read the
true colour and the named shape off the decoder's state at the last prompt position after each
layer (0 = the embeddings). A shape probe near chance (0.2) means the question's shape word never
reaches the position where the answer is read off the image.
"""

import argparse
import os
import sys

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import LlavaForConditionalGeneration

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_demo as td  # noqa: E402


@torch.no_grad()
def collect(model, tok, folder, limit, batch=64):
    """Last-position hidden states per layer, labels and attention shares for colour questions."""
    objects = {r["image"]: r for r in td.read_jsonl(os.path.join(folder, "objects.jsonl"))}
    rows = [
        r
        for r in td.load_rows(folder)
        if r["type"] == "color" and len(objects.get(r["image"], {}).get("objects", [])) >= 2
    ][:limit]
    images, index = td.load_images(folder, sorted({r["image"] for r in rows}))
    data = td.encode_rows(tok, rows, index)
    hidden, colour, shape, correct, image_share, target_share = [], [], [], [], [], []
    for k in range(0, len(data), batch):
        chunk, chunk_rows = data[k : k + batch], rows[k : k + batch]
        prompt_len = next(j for j, x in enumerate(chunk[0][1]) if x != -100)
        ids = torch.tensor([s[:prompt_len] for s, _, _ in chunk])
        pix = td.normalise(images[[im for _, _, im in chunk]])
        out = model(input_ids=ids, pixel_values=pix, output_hidden_states=True, output_attentions=True)
        hidden.append(torch.stack([h[:, -1] for h in out.hidden_states], 1))
        first = chunk[0][0].index(td.IMAGE)
        for b, r in enumerate(chunk_rows):
            mask = torch.from_numpy(td.patch_cover(objects[r["image"]]["objects"][r["object"]]) >= td.PATCH * td.PATCH // 4)
            att = torch.stack([a[b, :, -1, first : first + td.NUM_PATCHES] for a in out.attentions])
            image_share.append(att.sum(-1))
            target_share.append(att[..., mask].sum(-1) / att.sum(-1).clamp_min(1e-9))
        colour += [td.COLOUR_NAMES.index(r["answer"]) for r in chunk_rows]
        shape += [td.SHAPE_NAMES.index(r["question"].split()[-1].rstrip("?")) for r in chunk_rows]
        pred = out.logits[:, -1].argmax(-1)
        correct += [tok.id_to_token(int(p)) == "▁" + r["answer"] for p, r in zip(pred, chunk_rows)]
    return (
        torch.cat(hidden),
        torch.tensor(colour),
        torch.tensor(shape),
        np.mean(correct),
        torch.stack(image_share).mean(0),
        torch.stack(target_share).mean(0),
    )


def probe_accuracy(x_train, y_train, x_test, y_test, classes, steps=300):
    """Held-out accuracy of a standardised, lightly L2-regularised linear softmax probe."""
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-5
    w = torch.zeros(x_train.shape[1], classes, requires_grad=True)
    opt = torch.optim.Adam([w], lr=0.05)
    xn = (x_train - mu) / sd
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(xn @ w, y_train) + 1e-3 * w.pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float((((x_test - mu) / sd @ w).argmax(-1) == y_test).float().mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--train", required=True, help="make_scenes --objects folder to fit the probes on")
    ap.add_argument("--test", required=True, help="make_scenes --objects folder to score them on")
    ap.add_argument("--fit", type=int, default=3000, help="questions to fit the probes on")
    ap.add_argument("--score", type=int, default=600, help="questions to score")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = LlavaForConditionalGeneration.from_pretrained(args.model, attn_implementation="eager").eval()
    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    h_fit, c_fit, s_fit, _, _, _ = collect(model, tok, args.train, args.fit)
    h_test, c_test, s_test, acc, image_share, target_share = collect(model, tok, args.test, args.score)
    print(f"colour questions, 2+ objects: greedy accuracy {acc:.3f} ({len(c_test)} questions)")
    print("attention to the image, per layer (rows) and head:\n", image_share.numpy().round(2))
    print("of that, on the asked-about object:\n", target_share.numpy().round(2))
    for layer in range(h_fit.shape[1]):
        col = probe_accuracy(h_fit[:, layer], c_fit, h_test[:, layer], c_test, len(td.COLOUR_NAMES))
        shp = probe_accuracy(h_fit[:, layer], s_fit, h_test[:, layer], s_test, len(td.SHAPE_NAMES))
        print(f"state {layer} ({'embeddings' if layer == 0 else f'after layer {layer}'}): probe colour {col:.3f} shape {shp:.3f}")


if __name__ == "__main__":
    main()
