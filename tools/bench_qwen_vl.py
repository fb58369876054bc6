#!/usr/bin/env python3
"""Time and peak memory of `lvlmscope run` and `run --relevancy` against transformers on a
random-weight "mini" Qwen2.5-VL, at three image sizes, whole processes side by side.

Run by hand (needs torch, transformers, tokenizers, safetensors, pillow; nothing in the build or
CI runs it):

    cargo build --release
    python tools/bench_qwen_vl.py --workdir /tmp/lvlmscope-bench [--sizes 224,448,896] [--json OUT]

The mini model (made once into WORKDIR/mini-qwen2_5-vl, deterministic, never committed) is a
Qwen2_5_VLForConditionalGeneration shaped like a scaled-down Qwen/Qwen2.5-VL-3B-Instruct: vision
tower of 6 blocks of width 256 (8 heads), window attention (window 112 px) with full attention
in blocks 2 and 5, RMSNorm + SwiGLU, 2x2 merger to width 512; Qwen2 decoder of 6 layers, width
512, 8 heads, 2 KV heads, M-RoPE; the fixtures' Qwen-VL tokenizer and chat template, vocabulary
padded to 32000. min/max pixels are set so that a square image of side s px is not resized:
s = 224, 448, 896 give 256, 1024 and 4096 patches before the merge (64, 256, 1024 image tokens).

Per size, each a separate process (loading included), peak RSS from the kernel (wait4):
  A. lvlmscope run --max-new-tokens 8 --dtype f32 --device cpu (generated attention rows recorded)
  B. the same with --relevancy (decoder, vision through window attention, combined; every token)
  C. python (this file, --worker generate): transformers generate(output_attentions=True,
     max_new_tokens=8, min_new_tokens=8), greedy, eager, f32
  D. python (this file, --worker relevancy): C's greedy ids, then one eager forward with every
     attention in the autograd graph and one torch.autograd.grad per output token, Chefer rollout
     as tools/qwen_vl_relevancy.py (the reference the tests use)
It prints wall seconds and peak RSS of A-D and the ratios A/C and B/D per size, and how each
grows from one size to the next.

Measured 2026-11-30 (one run, release build, a 2-core machine shared with compile jobs, so C's
in-process generate times are noisy; whole-process wall seconds and peak RSS):

  patches   A run   C hf gen   A/C  |  B run+rel   D hf rel   B/D  | B-A memory
      256   0.76 s   8.30 s   0.09  |    2.41 s    47.33 s   0.05  |      0 MiB
     1024   2.01 s  17.31 s   0.12  |   24.81 s    81.32 s   0.31  |    588 MiB
     4096   7.75 s  15.82 s   0.49  |  305.56 s   390.59 s   0.78  |   9507 MiB
  peak RSS at 4096 patches: A 1.3 GiB, C 1.9 GiB, B 10.6 GiB, D 17.6 GiB

Before the window-by-window forward (same script, an earlier run) A took 29.93 s at 4096
patches (A/C 1.12): every windowed block ran one masked [P, P] product. Relevancy (B) still
computes the windowed blocks' attention backward over [P, P], as the tracked tape observes them.
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

VERSION = "mini-qwen2_5-vl/1"
MAX_NEW = 8
VOCAB = 32000
PATCH = 14
SPEC = dict(
    seed=41, arch="Qwen2_5_VLForConditionalGeneration", model_type="qwen2_5_vl", tied=False, layers=6,
    intermediate_size=1376,
    vision=dict(depth=6, hidden_size=256, intermediate_size=688, num_heads=8, in_channels=3, out_hidden_size=512,
                patch_size=PATCH, spatial_merge_size=2, temporal_patch_size=2, hidden_act="silu",
                window_size=112, fullatt_block_indexes=[2, 5], tokens_per_second=2),
)
TEXT = dict(hidden_size=512, num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=8192)
MROPE_SECTION = [8, 12, 12]  # sums to head_dim / 2 = 32


def build_mini(model_dir: Path) -> None:
    """Write the mini model folder unless the stamp says it is there."""
    stamp = model_dir / "BENCH_MODEL_VERSION"
    if stamp.exists() and stamp.read_text().strip() == VERSION:
        return
    import torch

    import bench_families as bf
    import make_fixtures as mf
    import make_qwen_vl_fixtures as mq
    import qwen_vl_common as qc

    print(f"building the mini model in {model_dir} ...", file=sys.stderr)
    if model_dir.exists():
        shutil.rmtree(model_dir)
    model_dir.mkdir(parents=True)
    mq.TEXT.update(TEXT)
    mq.MROPE_SECTION[:] = MROPE_SECTION
    tok = bf.padded(qc.qwen_vl_tokenizer(), VOCAB)
    mq.write_folder(model_dir, SPEC, tok)
    pre = mq.preprocessor_config()
    pre["min_pixels"] = 56 * 56
    pre["max_pixels"] = 896 * 896
    mf.dump(model_dir / "preprocessor_config.json", pre)
    torch.manual_seed(SPEC["seed"])
    cfg = mq.model_class(SPEC).config_class.from_pretrained(str(model_dir))
    model = mq.model_class(SPEC)(cfg).eval()
    mq.write_weights(model, model_dir, SPEC)
    stamp.write_text(VERSION + "\n")


def make_image(path: Path, side: int) -> None:
    """A deterministic side x side picture with shapes (not resized by the mini model)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (side, side), (200, 220, 240))
    d = ImageDraw.Draw(img)
    d.ellipse([side // 8, side // 8, side // 2, side // 2], fill=(220, 40, 40))
    d.rectangle([side // 2, side // 2, 7 * side // 8, 7 * side // 8], fill=(40, 160, 60))
    img.save(path)


def load(model_dir: str):
    import torch

    import make_qwen_vl_fixtures as mq

    from transformers import AutoImageProcessor, PreTrainedTokenizerFast, Qwen2VLProcessor

    import qwen_vl_common as qc

    class ImageOnly(Qwen2VLProcessor):
        """Qwen2VLProcessor without a video processor (the mini folder has none)."""

        def check_argument_for_proper_class(self, argument_name, argument):
            if argument_name == "video_processor" and argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    processor = ImageOnly(image_processor=AutoImageProcessor.from_pretrained(model_dir),
                          tokenizer=PreTrainedTokenizerFast.from_pretrained(model_dir),
                          chat_template=qc.QWEN_VL_TEMPLATE)
    model = mq.model_class(SPEC).from_pretrained(model_dir, attn_implementation="eager",
                                                 dtype=torch.float32).eval()
    return processor, model


def encode(processor, image_path: str, prompt: str) -> dict:
    from PIL import Image

    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    enc = processor(images=Image.open(image_path).convert("RGB"), text=text, return_tensors="pt")
    return enc


def greedy_ids(model, enc: dict, attentions: bool):
    import torch

    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=MAX_NEW, min_new_tokens=MAX_NEW, do_sample=False,
                             output_attentions=attentions, return_dict_in_generate=True)
    return out.sequences[0, enc["input_ids"].shape[1]:]


def worker(mode: str, model_dir: str, image: str, prompt: str, result: str) -> int:
    import torch

    t0 = time.perf_counter()
    processor, model = load(model_dir)
    enc = encode(processor, image, prompt)
    t1 = time.perf_counter()
    out = greedy_ids(model, enc, attentions=(mode == "generate"))
    t2 = time.perf_counter()
    info = {"load_s": t1 - t0, "generate_s": t2 - t1, "image_tokens": int(enc["image_grid_thw"].prod() // 4),
            "output_ids": out.tolist()}
    if mode == "relevancy":
        import qwen_vl_common as qc
        import qwen_vl_relevancy as qr

        for p in model.parameters():
            p.requires_grad_(True)
        ids = enc["input_ids"][0]
        seq = torch.cat([ids, out[:-1]])
        ref = {"input_ids": ids, "output_ids": out, "image_grid_thw": enc["image_grid_thw"],
               "pixel_values": enc["pixel_values"],
               "position_ids": qc.rope_index(model, seq, enc["image_grid_thw"], ids.shape[0])}
        qr.relevancy(model, ref, torch.float32)
        info["relevancy_s"] = time.perf_counter() - t2
    Path(result).write_text(json.dumps(info))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--sizes", default="224,448,896", help="square image sides in px, comma-separated")
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "lvlmscope"))
    ap.add_argument("--prompt", default="What is in the picture?")
    ap.add_argument("--json", help="write the measurements here")
    ap.add_argument("--worker", nargs=5, metavar=("MODE", "MODEL", "IMAGE", "PROMPT", "RESULT"))
    args = ap.parse_args()
    if args.worker:
        return worker(*args.worker)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    model_dir = work / "mini-qwen2_5-vl"
    build_mini(model_dir)
    rows = []
    for side in [int(s) for s in args.sizes.split(",")]:
        image = work / f"square-{side}.png"
        make_image(image, side)
        run = [args.binary, "run", "--model", str(model_dir), "--image", str(image), "--prompt", args.prompt,
               "--max-new-tokens", str(MAX_NEW), "--dtype", "f32", "--device", "cpu",
               "--save", str(work / f"run-{side}.session")]
        py = [sys.executable, __file__, "--workdir", str(work), "--worker"]
        row = {"side": side, "patches": (side // PATCH) ** 2}
        for key, cmd in [("A", run), ("B", run + ["--relevancy"]),
                         ("C", py + ["generate", str(model_dir), str(image), args.prompt, str(work / "C.json")]),
                         ("D", py + ["relevancy", str(model_dir), str(image), args.prompt, str(work / "D.json")])]:
            wall, rss, status = timed(cmd)
            row[key] = {"wall_s": wall, "peak_rss": rss, "ok": status == 0}
            if key in "CD" and status == 0:
                row[key]["worker"] = json.loads((work / f"{key}.json").read_text())
            print(f"{side} px ({row['patches']} patches) {key}: {wall:.2f} s, {rss / 2**20:.0f} MiB", file=sys.stderr)
        rows.append(row)
    print(f"{'side':>5} {'patches':>7} | {'A run':>13} {'C hf gen':>13} {'A/C':>5} | "
          f"{'B run+rel':>13} {'D hf rel':>13} {'B/D':>5} | {'B-A mem':>8}")
    for r in rows:
        a, b, c, d = (r[k] for k in "ABCD")
        print(f"{r['side']:>5} {r['patches']:>7} | {a['wall_s']:6.2f}s {a['peak_rss'] / 2**20:5.0f}M "
              f"{c['wall_s']:6.2f}s {c['peak_rss'] / 2**20:5.0f}M {a['wall_s'] / c['wall_s']:5.2f} | "
              f"{b['wall_s']:6.2f}s {b['peak_rss'] / 2**20:5.0f}M {d['wall_s']:6.2f}s {d['peak_rss'] / 2**20:5.0f}M "
              f"{b['wall_s'] / d['wall_s']:5.2f} | {(b['peak_rss'] - a['peak_rss']) / 2**20:7.0f}M")
    for r in rows:
        c, d = r["C"].get("worker", {}), r["D"].get("worker", {})
        print(f"{r['patches']} patches, transformers inside the process: generate {c.get('generate_s', 0):.2f} s "
              f"(load {c.get('load_s', 0):.2f} s); relevancy {d.get('relevancy_s', 0):.2f} s")
    for prev, cur in zip(rows, rows[1:]):
        grow = {k: cur[k]["wall_s"] / prev[k]["wall_s"] for k in "ABCD"}
        print(f"{prev['patches']} -> {cur['patches']} patches: time x " +
              ", ".join(f"{k} {v:.2f}" for k, v in grow.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
