#!/usr/bin/env python3
"""Time and peak memory of `lvlmscope run` and `run --relevancy` against transformers on random-weight
"mini" LLaVA-OneVision and LLaVA-NeXT models, at about 1k and 2.6k image tokens, whole processes side
by side.

Run by hand (needs torch, transformers, tokenizers, safetensors, pillow; nothing in the build or CI
runs it):

    cargo build --release
    python tools/bench_anyres.py --workdir /tmp/lvlmscope-bench-anyres [--models onevision,next]
                                 [--sizes 336x448,672x672] [--json OUT]

The mini models (made once into WORKDIR/mini-<name>, deterministic, never committed) use
transformers' own classes, written in the legacy llava-hf key layout as tools/make_anyres_fixtures.py
writes the test fixtures; tiles of 224 px with 14 px patches (256 features a tile):

  onevision  LlavaOnevisionForConditionalGeneration: SigLIP 224/14, 4 layers of width 256 (8 heads),
             no CLS, layer -1, strategy full; Qwen2 decoder of 4 layers, width 512, 8 heads, 2 KV
             heads, mlp 1376, tied embeddings; pinpoints 224·(1..3) × 224·(1..3), anyres_max_9;
             ChatML template
  next       LlavaNextForConditionalGeneration: CLIP 224/14, 4 layers of width 256 (8 heads), layer
             -2, strategy default; LLaMA decoder of 4 layers, width 512, 8 heads, mlp 1376;
             pinpoints [224,448] [448,224] [448,448] [672,224] [224,672] [672,672]; LLaVA-1.5
             template

Vocabularies are the fixtures' tokenizers padded to 32000; the lm_head rows of the EOS ids are zero,
so both sides make all 8 tokens. Images (height x width): 336x448 gives a 2x2 tile canvas unpadded to
24x32 cells: 256 + 24·33 = 1048 image tokens; 672x672 a 3x3 canvas of 48x48 cells: 256 + 48·49 = 2608
(anyres_max_9 does not pool it: r = 1).

Per model and size, each a separate process (loading included), peak RSS from the kernel (wait4):
  A. lvlmscope run --max-new-tokens 8 --dtype f32 --device cpu (generated attention rows recorded)
  B. the same with --relevancy (decoder, per-view vision, combined; every token)
  C. python (this file, --worker generate): transformers generate(output_attentions=True,
     max_new_tokens=8, min_new_tokens=8), greedy, eager, f32
  D. python (this file, --worker relevancy): C's greedy ids, then one eager forward with every
     attention in the autograd graph and one torch.autograd.grad per output token, Chefer rollout per
     tile as tools/anyres_relevancy.py (the reference the tests use), f32
It prints wall seconds and peak RSS of A-D and the ratios A/C and B/D.

Measured 2026-11-30 (one run, release build, a 2-core machine shared with compile jobs, so the
times are noisy; whole-process wall seconds and peak RSS):

      model tokens |  A run          C hf gen        A/C |  B run+rel       D hf rel         B/D
  onevision   1048 |  3.64 s  288 M  13.64 s 1101 M 0.27 |  72.05 s 1043 M  95.40 s 2209 M 0.76
  onevision   2608 | 17.69 s  879 M  20.59 s 2053 M 0.86 | 470.30 s 4430 M 414.65 s 5776 M 1.13
       next   1048 |  4.17 s  390 M  14.02 s 1130 M 0.30 |  68.14 s 1107 M  84.65 s 2158 M 0.81
       next   2608 | 15.06 s  980 M  22.34 s 2082 M 0.67 | 402.26 s 4413 M 367.20 s 5901 M 1.10
  peak RSS ratios: A/C 0.26-0.47, B/D 0.47-0.77 (lvlmscope below transformers everywhere)

Inside the processes at 2608 tokens: transformers' generate 12.4 s (OneVision) / 11.3 s (NeXT), its
relevancy 390 s / 347 s; lvlmscope's prefill 13.2 s / 12.2 s, its relevancy 454 s / 388 s. Both
relevancy passes are dominated by the [S, S] work per layer and output token (the rollout
R <- R + Abar R is an [S, S] x [S, S] product; S ~ 2.6k): 2.5x the image tokens cost 6x the time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from bench_process import timed  # noqa: E402

VERSION = "mini-anyres/1"
MAX_NEW = 8
VOCAB = 32000
TILE = 224
PATCH = 14
CLIP_224 = dict(model_type="clip_vision_model", hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                num_attention_heads=8, image_size=TILE, patch_size=PATCH)
SIGLIP_224 = dict(model_type="siglip_vision_model", hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                  num_attention_heads=8, image_size=TILE, patch_size=PATCH, vision_use_head=False)
TEXT = dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=4, num_attention_heads=8,
            max_position_embeddings=8192)
MINIS = {
    "onevision": dict(
        seed=51, arch="LlavaOnevisionForConditionalGeneration", model_type="llava_onevision", family="qwen2",
        processor="LlavaOnevisionProcessor", improc="LlavaOnevisionImageProcessor", tied=True, scales={},
        vision=SIGLIP_224,
        text=dict(model_type="qwen2", num_key_value_heads=2, rms_norm_eps=1e-06, rope_theta=1000000.0,
                  use_sliding_window=False, tie_word_embeddings=True, **TEXT),
        vision_feature_layer=-1, strategy="full",
        pinpoints=[[TILE * i, TILE * j] for i in (1, 2, 3) for j in (1, 2, 3)], vision_aspect_ratio="anyres_max_9",
    ),
    "next": dict(
        seed=52, arch="LlavaNextForConditionalGeneration", model_type="llava_next", family="llama",
        processor="LlavaNextProcessor", improc="LlavaNextImageProcessor", tied=False, scales={},
        vision=CLIP_224,
        text=dict(model_type="llama", num_key_value_heads=8, rms_norm_eps=1e-05, rope_theta=10000.0, **TEXT),
        vision_feature_layer=-2, strategy="default",
        pinpoints=[[224, 448], [448, 224], [448, 448], [672, 224], [224, 672], [672, 672]],
    ),
}


def build_mini(name: str, model_dir: Path) -> None:
    """Write the mini model `name` into model_dir unless the stamp says it is there."""
    stamp = model_dir / "BENCH_MODEL_VERSION"
    if stamp.exists() and stamp.read_text().strip() == f"{VERSION}/{name}":
        return
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig

    import bench_families as bf
    import make_anyres_fixtures as ma
    import make_fixtures as mf

    print(f"building the {name} mini model in {model_dir} ...", file=sys.stderr)
    spec = MINIS[name]
    fam = ma.FAMILY[spec["family"]]
    if model_dir.exists():
        shutil.rmtree(model_dir)
    model_dir.mkdir(parents=True)
    tok = bf.padded(fam["tokenizer"](), VOCAB)
    ids = ma.write_folder(model_dir, spec, tok, fam)
    tcfg_path = model_dir / "tokenizer_config.json"
    tcfg = json.loads(tcfg_path.read_text())
    tcfg["model_max_length"] = 8192
    mf.dump(tcfg_path, tcfg)
    torch.manual_seed(spec["seed"])
    config = AutoConfig.from_pretrained(str(model_dir))
    config._attn_implementation = "eager"
    model = ma.model_class(spec)(config).eval()
    mf.sharpen(model, spec["seed"], spec["scales"])
    if spec["tied"]:
        model.tie_weights()
    with torch.no_grad():
        model.lm_head.weight[ids[fam["eos"]]].zero_()
    sd = {ma.to_legacy(k): v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    if spec["tied"]:
        sd = {k: v for k, v in sd.items() if not k.endswith("lm_head.weight")}
    save_file(sd, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    stamp.write_text(f"{VERSION}/{name}\n")


def make_image(path: Path, h: int, w: int) -> None:
    """A deterministic h x w picture with shapes."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (w, h), (200, 220, 240))
    d = ImageDraw.Draw(img)
    d.ellipse([w // 8, h // 8, w // 2, h // 2], fill=(220, 40, 40))
    d.rectangle([w // 2, h // 2, 7 * w // 8, 7 * h // 8], fill=(40, 160, 60))
    img.save(path)


def worker(mode: str, name: str, model_dir: str, image: str, result: str) -> int:
    import torch
    from PIL import Image

    import anyres_relevancy as ar
    import make_anyres_fixtures as ma

    spec = MINIS[name]
    t0 = time.perf_counter()
    processor = ma.make_processor(Path(model_dir), spec, ma.FAMILY[spec["family"]]["template"])
    model = ma.model_class(spec).from_pretrained(model_dir, attn_implementation="eager",
                                                 dtype=torch.float32).eval()
    enc = ma.encode(processor, Image.open(image).convert("RGB"))
    ids, pv, sizes = enc["input_ids"], enc["pixel_values"], enc["image_sizes"]
    t1 = time.perf_counter()
    with torch.no_grad():
        gen = model.generate(input_ids=ids[None], pixel_values=pv[None], image_sizes=sizes,
                             attention_mask=torch.ones_like(ids)[None], do_sample=False,
                             max_new_tokens=MAX_NEW, min_new_tokens=MAX_NEW,
                             output_attentions=(mode == "generate"), return_dict_in_generate=True)
    out = gen.sequences[0, ids.shape[0]:]
    t2 = time.perf_counter()
    info = {"load_s": t1 - t0, "generate_s": t2 - t1,
            "image_tokens": int((ids == model.config.image_token_index).sum()), "output_ids": out.tolist()}
    if mode == "relevancy":
        cfg = model.config
        p = (cfg.vision_config.image_size // cfg.vision_config.patch_size) ** 2
        with torch.no_grad():
            packing, _ = ma.packing(model, sizes, pv.shape[0], p)
        for prm in model.parameters():
            prm.requires_grad_(True)
        ref = {"input_ids": ids, "output_ids": out, "image_sizes": sizes, "pixel_values": pv, "packing": packing}
        ar.relevancy(model, ref, torch.float32)
        info["relevancy_s"] = time.perf_counter() - t2
    Path(result).write_text(json.dumps(info))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--models", default="onevision,next", help="comma-separated: onevision, next")
    ap.add_argument("--sizes", default="336x448,672x672", help="image HEIGHTxWIDTH in px, comma-separated")
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "lvlmscope"))
    ap.add_argument("--prompt", default="What is in the picture?")
    ap.add_argument("--json", help="write the measurements here")
    ap.add_argument("--worker", nargs=5, metavar=("MODE", "NAME", "MODEL", "IMAGE", "RESULT"))
    args = ap.parse_args()
    if args.worker:
        return worker(*args.worker)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models.split(","):
        model_dir = work / f"mini-{name}"
        build_mini(name, model_dir)
        for size in args.sizes.split(","):
            h, w = (int(v) for v in size.split("x"))
            image = work / f"image-{h}x{w}.png"
            make_image(image, h, w)
            run = [args.binary, "run", "--model", str(model_dir), "--image", str(image), "--prompt", args.prompt,
                   "--max-new-tokens", str(MAX_NEW), "--dtype", "f32", "--device", "cpu",
                   "--save", str(work / f"run-{name}-{size}.session")]
            py = [sys.executable, __file__, "--workdir", str(work), "--worker"]
            row = {"model": name, "size": size}
            for key, cmd in [("A", run), ("B", run + ["--relevancy"]),
                             ("C", py + ["generate", name, str(model_dir), str(image), str(work / "C.json")]),
                             ("D", py + ["relevancy", name, str(model_dir), str(image), str(work / "D.json")])]:
                wall, rss, status = timed(cmd)
                row[key] = {"wall_s": wall, "peak_rss": rss, "ok": status == 0}
                if key in "CD" and status == 0:
                    row[key]["worker"] = json.loads((work / f"{key}.json").read_text())
                print(f"{name} {size} {key}: {wall:.2f} s, {rss / 2**20:.0f} MiB", file=sys.stderr)
            row["tokens"] = row["C"].get("worker", {}).get("image_tokens", 0)
            rows.append(row)
    print(f"{'model':>9} {'tokens':>6} | {'A run':>13} {'C hf gen':>13} {'A/C':>5} | "
          f"{'B run+rel':>13} {'D hf rel':>13} {'B/D':>5}")
    for r in rows:
        a, b, c, d = (r[k] for k in "ABCD")
        print(f"{r['model']:>9} {r['tokens']:>6} | {a['wall_s']:6.2f}s {a['peak_rss'] / 2**20:5.0f}M "
              f"{c['wall_s']:6.2f}s {c['peak_rss'] / 2**20:5.0f}M {a['wall_s'] / c['wall_s']:5.2f} | "
              f"{b['wall_s']:6.2f}s {b['peak_rss'] / 2**20:5.0f}M {d['wall_s']:6.2f}s {d['peak_rss'] / 2**20:5.0f}M "
              f"{b['wall_s'] / d['wall_s']:5.2f}")
    for r in rows:
        c, d = r["C"].get("worker", {}), r["D"].get("worker", {})
        print(f"{r['model']} {r['tokens']} tokens, transformers inside the process: generate "
              f"{c.get('generate_s', 0):.2f} s (load {c.get('load_s', 0):.2f} s); relevancy {d.get('relevancy_s', 0):.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
