#!/usr/bin/env python3
"""Time lvlmscope's relevancy (all output tokens) against the PyTorch-autograd reference, whole
processes side by side on the "mini" LLaVA of tools/bench_vs_transformers.py.

Run by hand (needs torch, transformers, safetensors, pillow; nothing in the build or CI runs it):

    python tools/bench_relevancy.py --workdir /tmp/lvlmscope-bench [--reps 1]

Inputs (made once into WORKDIR/relevancy-inputs.safetensors): the mini model's input_ids and
pixel_values for the fixture image and prompt (transformers processor), and 32 greedy output ids
(taken from WORKDIR/hf-result.json when bench_vs_transformers.py left one, else generated).

Each repetition times, as whole processes (imports and model loading included):
  R. the relevancy bench binary (`cargo bench --bench relevancy`, release) in whole-process mode:
     load the model, relevancy of every output token (decoder, vision, combined rows), f32, CPU;
  P. python (this file, --worker full): load the model with transformers (eager, f32), one
     forward with attentions in the autograd graph, one torch.autograd.grad per output token
     (decoder + vision attentions), Chefer rollout with full matrices as
     tools/relevancy_reference.py (and LVLM-Interpret) do;
  Q. the same with the rollout as a row (vector-matrix chain), a stronger PyTorch baseline.
It prints the medians (wall and CPU), R/P and R/Q, and the max |difference| of the rows of R
against P.

Measured 2026-11-26 (one repetition; a 2-core machine shared with other jobs, load ~7, so the CPU
seconds are the steadier figure): R 275 s wall / 121 s CPU (peak RSS 1.16 GiB), P 453 s / 208 s,
Q 433 s / 212 s: R/P = 0.61 wall, 0.58 CPU. The random-weight mini model has huge gradients
(rows up to ~3e3 decoder, ~3e6 vision); R and P agree to ~1e-3 relative per row, up to a few
1e-2 on some rows, as far as torch f32 itself is from torch f64 on those rows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))


def make_inputs(workdir: Path, image: str) -> Path:
    import bench_vs_transformers as bvt
    import torch
    from safetensors.torch import save_file

    path = workdir / "relevancy-inputs.safetensors"
    if path.exists():
        return path
    model_dir = workdir / "mini-llava"
    bvt.build_mini(model_dir)
    from PIL import Image
    from transformers import CLIPImageProcessorPil, LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(model_dir)
    improc = CLIPImageProcessorPil.from_pretrained(model_dir)
    cfg = json.loads((model_dir / "config.json").read_text())
    processor = LlavaProcessor(
        image_processor=improc, tokenizer=tokenizer, patch_size=cfg["vision_config"]["patch_size"],
        vision_feature_select_strategy=cfg["vision_feature_select_strategy"],
        chat_template=tokenizer.chat_template, num_additional_image_tokens=1)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": bvt.PROMPT}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    enc = processor(images=Image.open(image).convert("RGB"), text=text, return_tensors="pt")
    ids = enc["input_ids"][0]
    out = None
    hf = workdir / "hf-result.json"
    if hf.exists():
        res = json.loads(hf.read_text())
        if res.get("input_len") == ids.shape[0] and len(res.get("output_ids", [])) == bvt.MAX_NEW:
            out = torch.tensor(res["output_ids"])
    if out is None:
        model = LlavaForConditionalGeneration.from_pretrained(model_dir, attn_implementation="eager",
                                                              dtype=torch.float32).eval()
        with torch.no_grad():
            seq = model.generate(**enc, do_sample=False, max_new_tokens=bvt.MAX_NEW, min_new_tokens=bvt.MAX_NEW)
        out = seq[0, ids.shape[0]:]
    save_file({"input_ids": ids.long().contiguous(), "output_ids": out.long().contiguous(),
               "pixel_values": enc["pixel_values"][0].float().contiguous()}, str(path))
    return path


def worker(model_dir: str, inputs: str, rows_out: str, mode: str, result: str) -> int:
    """PyTorch relevancy of every output token; timed from outside as a whole."""
    t0 = time.perf_counter()
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import LlavaForConditionalGeneration

    import relevancy_reference as rr

    model = LlavaForConditionalGeneration.from_pretrained(model_dir, attn_implementation="eager",
                                                          dtype=torch.float32).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    ref = load_file(inputs)
    t_load = time.perf_counter()
    ids, out = ref["input_ids"], ref["output_ids"]
    n, t_len = ids.shape[0], out.shape[0]
    seq = torch.cat([ids, out[:-1]])
    px = ref["pixel_values"].requires_grad_(True)  # so that every attention is in the graph
    logits, dec, vis = rr.forward(model, seq, px)
    llm, vit, comb = [], [], []
    for i in range(t_len):
        grads = torch.autograd.grad(logits[n - 1 + i, out[i]], dec + vis, retain_graph=True)
        gd, gv = grads[: len(dec)], grads[len(dec):]
        if mode == "full":
            r = rr.rollout([a.detach()[0] for a in dec], [g[0] for g in gd])[n - 1 + i]
            rv = rr.rollout([a.detach()[0] for a in vis], [g[0] for g in gv])
        else:
            r = torch.zeros(seq.shape[0])
            r[n - 1 + i] = 1
            for a, g in zip(reversed(dec), reversed(gd)):
                r = r + r @ (g[0] * a.detach()[0]).clamp(min=0).mean(0)
            rv = None
        if rv is not None:
            vit.append(rv[0, 1:])
            comb.append(rr.combined_row(model, seq, r, rv))
        llm.append(r)
    t_rel = time.perf_counter()
    if rows_out:
        tensors = {"relevancy_llm": torch.stack(llm).contiguous()}
        if vit:
            tensors["relevancy_vit"] = torch.stack(vit).contiguous()
            tensors["relevancy_combined"] = torch.stack(comb).contiguous()
        save_file(tensors, rows_out)
    Path(result).write_text(json.dumps({"load_s": t_load - t0, "relevancy_s": t_rel - t_load}))
    return 0


def bench_binary() -> str:
    env = dict(os.environ)
    env.setdefault("CARGO_TARGET_DIR", "/work/main/target")
    proc = subprocess.run(["cargo", "bench", "--bench", "relevancy", "--no-run", "--message-format=json"],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=True)
    for line in proc.stdout.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("target", {}).get("name") == "relevancy" \
                and msg.get("executable"):
            return msg["executable"]
    raise RuntimeError("no relevancy bench executable")


CPU: dict[str, list[float]] = {}


def timed(cmd: list[str], env: dict | None = None, key: str = "") -> tuple[float, str]:
    """Wall seconds of a whole process; its CPU seconds (user + system) go to CPU[key]."""
    import resource

    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.setdefault(key, []).append((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime))
    if proc.returncode != 0:
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr.strip()[-2000:]}")
    return dt, proc.stdout


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default="/tmp/lvlmscope-bench")
    ap.add_argument("--image", default=str(ROOT / "tests" / "fixtures" / "image.png"))
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--skip-row", action="store_true", help="do not time the row-rollout PyTorch variant")
    ap.add_argument("--worker", nargs=5, metavar=("MODEL", "INPUTS", "ROWS", "MODE", "RESULT"))
    args = ap.parse_args()
    if args.worker:
        return worker(*args.worker)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    inputs = make_inputs(workdir, args.image)
    model_dir = str(workdir / "mini-llava")
    exe = bench_binary()
    rows_rust, rows_torch = workdir / "rel-rust.safetensors", workdir / "rel-torch.safetensors"
    times: dict[str, list[float]] = {"R": [], "P": [], "Q": []}
    info = {}
    for rep in range(args.reps):
        env = dict(os.environ, LVLMSCOPE_RELEVANCY_MODEL=model_dir, LVLMSCOPE_RELEVANCY_INPUTS=str(inputs),
                   LVLMSCOPE_RELEVANCY_OUT=str(rows_rust))
        dt, out = timed([exe], env, "R")
        times["R"].append(dt)
        info["R"] = json.loads(out.strip().splitlines()[-1])
        for key, mode in (("P", "full"), ("Q", "row")):
            if key == "Q" and args.skip_row:
                continue
            res = workdir / f"rel-torch-{mode}.json"
            dt, _ = timed([sys.executable, str(Path(__file__).resolve()), "--worker", model_dir, str(inputs),
                           str(rows_torch) if mode == "full" else "", mode, str(res)], None, key)
            times[key].append(dt)
            info[key] = json.loads(res.read_text())
        print(f"rep {rep + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s wall {CPU[k][-1]:.1f} s CPU"
                                             for k, v in times.items() if v), flush=True)
    from safetensors.torch import load_file

    a, b = load_file(str(rows_rust)), load_file(str(rows_torch))
    diffs = {k: float((a[k] - b[k]).abs().max()) for k in b}
    med = {k: statistics.median(v) for k, v in times.items() if v}
    cpu = {k: statistics.median(v) for k, v in CPU.items() if v}
    print(f"\nmini LLaVA, {info['R']['tokens']} output tokens, S = {info['R']['positions']} positions, CPU f32, "
          f"{args.reps} repetition(s), medians of whole processes:")
    print(f"  R lvlmscope relevancy  {med['R']:7.1f} s   (load {info['R']['load_s']:.1f} s, relevancy "
          f"{info['R']['relevancy_s']:.1f} s, peak RSS {info['R']['peak_rss'] / 2**30:.2f} GiB, estimate with "
          f"one token per backward {info['R']['estimate_chunk1'] / 2**30:.2f} GiB + "
          f"{info['R']['estimate_per_token'] / 2**30:.3f} GiB per further token)")
    print(f"  P torch, full rollout  {med['P']:7.1f} s   (import+load {info['P']['load_s']:.1f} s, relevancy "
          f"{info['P']['relevancy_s']:.1f} s)")
    if "Q" in med:
        print(f"  Q torch, row rollout   {med['Q']:7.1f} s   (import+load {info['Q']['load_s']:.1f} s, relevancy "
              f"{info['Q']['relevancy_s']:.1f} s)")
    print(f"  wall: R/P = {med['R'] / med['P']:.2f}" + (f", R/Q = {med['R'] / med['Q']:.2f}" if "Q" in med else ""))
    print(f"  CPU (user + system): R {cpu['R']:.1f} s, P {cpu['P']:.1f} s" + (f", Q {cpu['Q']:.1f} s" if "Q" in cpu else "")
          + f"; R/P = {cpu['R'] / cpu['P']:.2f}" + (f", R/Q = {cpu['R'] / cpu['Q']:.2f}" if "Q" in cpu else ""))
    print("  max |R − P| per map: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
