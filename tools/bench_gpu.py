#!/usr/bin/env python3
"""lvlmscope's CUDA build on a GPU machine, in one run: parity with the CPU, and a benchmark
against transformers on a 7B-shaped random-weight LLaVA in bf16.

Run by hand on the GPU machine (needs torch for CUDA 13, transformers, safetensors, pillow; never
run by the build or CI), with a CUDA binary built elsewhere (`source tools/cuda_env.sh; cargo
build --release --features cuda; strip`):

    python3 tools/bench_gpu.py --bin ./lvlmscope --out /tmp/gpu [--layers 8] [--skip-bench] [--profile]
    python3 tools/bench_gpu.py --bench-only --profile ...   # the benchmark and its span profile only

The binary finds the CUDA libraries through LD_LIBRARY_PATH, which this script points at the
`nvidia/cu13/lib` folder of torch's environment.

1. Parity (fixtures `tests/fixtures/tiny-llava-gqa`, `tiny-qwen2-vl`, `tiny-llava-next`): `run
   --capture full --f32-attention --relevancy` on the CPU and on CUDA in f32; output ids must be
   equal and every recorded tensor is compared (max |difference|; relevancy also relative to its
   row's largest value). Then CUDA f16 and bf16: whether the ids still equal the CPU's, and how
   far the attention lands.
2. `eval --scenes 20` (the demo: pointing game, mass in mask and the deletion curves of
   faithfulness) on the CPU and on CUDA: the JSON numbers compared.
3. Bad input: `--device cuda:7` must exit non-zero with one line on stderr.
4. Benchmark: a 7B-shaped LLaVA (CLIP ViT-L/336, 576 image tokens; LLaMA width 4096, 32 heads,
   MLP 11008, vocab 32000, `--layers` decoder layers of 32) made here on the GPU with random
   weights (std 0.02; the EOS row of lm_head zero, so both sides make 32 tokens), saved in bf16.
   Side by side, whole processes, the GPU's memory polled with nvidia-smi every 20 ms:
     A. lvlmscope run --dtype bf16 --device cuda --max-new-tokens 32 (generated attention rows
        recorded, the default)
     B. transformers generate(output_attentions=True, max_new_tokens=32), eager, bf16
     C. lvlmscope run --max-new-tokens 8 --relevancy (decoder, vision and combined rows)
     D. transformers: one forward with the attentions in the autograd graph, one autograd.grad
        per output token (8), Chefer's rollout as LVLM-Interpret does it (full matrices)
   It prints the times (lvlmscope's own stage timings and transformers' in-process ones), the
   ratios, the peak GPU memory, and the prefill's distance from the GPU's bf16 FLOP floor.
5. `--profile`: A and C again with `LVLMSCOPE_LOG=lvlmscope=debug LVLMSCOPE_LOG_SYNC=1` (every
   stage span waits for the GPU before it closes, so it times the work, not the launches; the
   waits cost some overlap, so the wall times are a little longer than the plain runs'). The
   logs are copied into OUT (`profile_A.log`, `profile_C.log`) and a summary per span name
   printed (total busy time, count; top 15), also per outermost stage (`decode/decoder_layer`).
   `--summarize LOG...` prints that summary of logs made elsewhere and exits (no GPU needed).
Everything goes to OUT/gpu.json as it is measured, so a run cut short keeps what it had.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
IMAGE = FIX / "image.png"
PROMPT = "What is in the picture?"
PARITY = ["tiny-llava-gqa", "tiny-qwen2-vl", "tiny-llava-next"]
H200_BF16_FLOPS = 989e12  # dense bf16 tensor-core peak of an H100/H200 SXM
RESULTS: dict = {}
# Where torch runs: cuda, or cpu for a dry run of the script's own logic (`--dry-run`).
TORCH_DEVICE = os.environ.get("LVLMSCOPE_BENCH_TORCH_DEVICE", "cuda")


def save(out: Path) -> None:
    (out / "gpu.json").write_text(json.dumps(RESULTS, indent=2))


def cuda_env() -> dict:
    """The environment with LD_LIBRARY_PATH on torch's CUDA 13 libraries."""
    import nvidia  # the NVIDIA wheels torch depends on

    libs = [str(Path(p) / "cu13" / "lib") for p in nvidia.__path__]
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join(libs + [env.get("LD_LIBRARY_PATH", "")])
    env.pop("RUST_BACKTRACE", None)
    return env


class GpuPeak:
    """Peak `memory.used` of GPU 0 (MiB) while the block runs, polled with nvidia-smi."""

    def __enter__(self):
        self.peak, self.base, self.stop = 0, self.used(), False
        self.thread = threading.Thread(target=self.poll, daemon=True)
        self.thread.start()
        return self

    @staticmethod
    def used() -> int:
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                                  "-i", "0"], capture_output=True, text=True).stdout
        except FileNotFoundError:
            return 0
        return int(out.split()[0]) if out.strip() else 0

    def poll(self):
        while not self.stop:
            self.peak = max(self.peak, self.used())
            time.sleep(0.02)

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join()
        self.peak = max(self.peak, self.used())
        self.delta = self.peak - self.base


def run(cmd: list[str], env: dict, timeout: float) -> tuple[int, float, str]:
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        return p.returncode, time.perf_counter() - t0, (p.stderr or "") + (p.stdout or "")
    except subprocess.TimeoutExpired:
        return 124, time.perf_counter() - t0, f"timed out after {timeout:.0f} s"


def session(path: Path):
    """(manifest, tensors as float64 numpy) of a session file."""
    import numpy as np
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        manifest = json.loads(f.metadata()["lvlmscope"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return manifest, {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in tensors.items()}


def compare(a: dict, b: dict) -> dict:
    import numpy as np

    out = {}
    for k in sorted(set(a) & set(b)):
        if a[k].dtype.kind != "f" or a[k].shape != b[k].shape:
            continue
        d = np.abs(a[k] - b[k])
        row = {"max_abs": float(d.max()) if d.size else 0.0}
        if k.startswith("relevancy") and a[k].ndim == 2:
            scale = np.abs(a[k]).max(axis=1, keepdims=True)
            row["max_rel_to_row_max"] = float((d / np.maximum(scale, 1e-30)).max())
        out[k] = row
    return out


def parity(bin_: str, env: dict, work: Path, out: Path, names: list[str]) -> None:
    res = RESULTS.setdefault("parity", {})
    for name in names:
        base = ["run", "--model", str(FIX / name), "--image", str(IMAGE), "--prompt", PROMPT,
                "--max-new-tokens", "6", "--capture", "full", "--f32-attention"]
        runs = {}
        for label, extra in [("cpu_f32", ["--device", "cpu", "--relevancy"]),
                             ("cuda_f32", ["--device", "cuda", "--relevancy"]),
                             ("cuda_f16", ["--device", "cuda", "--dtype", "f16"]),
                             ("cuda_bf16", ["--device", "cuda", "--dtype", "bf16"])]:
            path = work / f"{name}.{label}.session"
            rc, secs, log = run([bin_, *base, *extra, "--save", str(path)], env, 90)
            runs[label] = (rc, secs, log.strip().splitlines()[-1:] if log.strip() else [], path)
        entry = {label: {"rc": rc, "seconds": round(s, 2), "last_line": line}
                 for label, (rc, s, line, _) in runs.items()}
        if runs["cpu_f32"][0] == 0:
            cpu_m, cpu_t = session(runs["cpu_f32"][3])
            for label in ("cuda_f32", "cuda_f16", "cuda_bf16"):
                if runs[label][0] != 0:
                    continue
                m, t = session(runs[label][3])
                entry[label]["ids_equal"] = bool((t["output_ids"] == cpu_t["output_ids"]).all()) \
                    if t["output_ids"].shape == cpu_t["output_ids"].shape else False
                entry[label]["generation"] = m.get("generation")
                entry[label]["tensors"] = compare(cpu_t, t)
        res[name] = entry
        save(out)
        print(f"parity {name}: " + json.dumps({k: {kk: v[kk] for kk in ("rc", "ids_equal") if kk in v}
                                               for k, v in entry.items()}), flush=True)


def eval_parity(bin_: str, env: dict, work: Path, out: Path) -> None:
    res = {}
    for dev in ("cpu", "cuda"):
        path = work / f"eval.{dev}.json"
        rc, secs, log = run([bin_, "eval", "--scenes", "20", "--json", str(path), "--device", dev], env, 180)
        res[dev] = {"rc": rc, "seconds": round(secs, 2), "last_line": log.strip().splitlines()[-1:]}
    if res["cpu"]["rc"] == 0 and res["cuda"]["rc"] == 0:
        a = json.loads((work / "eval.cpu.json").read_text())
        b = json.loads((work / "eval.cuda.json").read_text())
        worst = [0.0, ""]

        def walk(x, y, where):
            if isinstance(x, dict) and isinstance(y, dict):
                for k in x.keys() & y.keys():
                    if k not in ("timings", "seconds", "parameters"):
                        walk(x[k], y[k], f"{where}.{k}")
            elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
                for i, (u, v) in enumerate(zip(x, y)):
                    walk(u, v, f"{where}[{i}]")
            elif isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
                if abs(x - y) > worst[0]:
                    worst[0], worst[1] = abs(x - y), where

        walk(a, b, "")
        res["max_abs_difference"], res["where"] = worst
    RESULTS["eval"] = res
    save(out)
    print("eval: " + json.dumps(res), flush=True)


def bad_device(bin_: str, env: dict, work: Path, out: Path) -> None:
    rc, _, log = run([bin_, "run", "--model", str(FIX / "tiny-llava-gqa"), "--image", str(IMAGE),
                      "--prompt", PROMPT, "--device", "cuda:7", "--save", str(work / "x.session")], env, 60)
    RESULTS["bad_device"] = {"rc": rc, "stderr_lines": log.strip().splitlines()}
    save(out)
    print("cuda:7: " + json.dumps(RESULTS["bad_device"]), flush=True)


# ----------------------------------------------------------------------------------------
# the 7B-shaped model


def build_7b(model_dir: Path, layers: int, tiny: bool = False) -> dict:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig, LlavaForConditionalGeneration

    sys.path.insert(0, str(ROOT / "tools"))
    import bench_vs_transformers as bvt
    import make_fixtures as mf

    model_dir.mkdir(parents=True, exist_ok=True)
    vision = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                  image_size=336, patch_size=14, projection_dim=768)
    text = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=layers, num_attention_heads=32,
                num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0)
    if tiny:  # the dry run: the same code on narrow layers
        vision.update(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=2)
        text.update(hidden_size=128, intermediate_size=256, num_attention_heads=4, num_key_value_heads=4)
    ids = bvt.write_llava_folder(model_dir, vision, text, 32000, 4096, "bfloat16")
    torch.manual_seed(7)
    config = AutoConfig.from_pretrained(str(model_dir))
    with torch.device(TORCH_DEVICE):
        model = LlavaForConditionalGeneration(config).to(torch.bfloat16)
    with torch.no_grad():
        model.lm_head.weight[ids["</s>"]].zero_()
    sd = {mf.to_current(k): v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    params = sum(v.numel() for v in sd.values())
    save_file(sd, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    del model, sd
    if TORCH_DEVICE == "cuda":
        torch.cuda.empty_cache()
    return {"parameters": params, "vision": vision, "text": text}


def prefill_flops(info: dict, positions: int) -> float:
    """Multiply-adds ×2 of one prefill: the vision tower over 577 tokens, the projector, the
    decoder over `positions` (linear layers and the S² attention products), the last logits."""
    v, t = info["vision"], info["text"]
    pv, dv, fv, lv = 577, v["hidden_size"], v["intermediate_size"], v["num_hidden_layers"] - 1
    vision = lv * (2 * pv * (4 * dv * dv + 2 * dv * fv) + 4 * pv * pv * dv)
    d, f, lt = t["hidden_size"], t["intermediate_size"], t["num_hidden_layers"]
    projector = 2 * 576 * (dv * d + d * d)
    decoder = lt * (2 * positions * (4 * d * d + 3 * d * f) + 4 * positions * positions * d)
    return vision + projector + decoder + 2 * d * 32000


def hf_worker(model_dir: str, result: str, mode: str) -> int:
    """transformers' side of B (mode gen) or D (mode rel), in its own process."""
    t0 = time.perf_counter()
    import torch
    from PIL import Image
    from transformers import LlavaForConditionalGeneration

    sys.path.insert(0, str(ROOT / "tools"))
    import bench_vs_transformers as bvt
    import relevancy_reference as rr

    processor = bvt.make_processor(model_dir)
    model = LlavaForConditionalGeneration.from_pretrained(
        model_dir, attn_implementation="eager", dtype=torch.bfloat16).to(TORCH_DEVICE).eval()
    sync = torch.cuda.synchronize if TORCH_DEVICE == "cuda" else (lambda: None)
    sync()
    t_load = time.perf_counter()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    bos = processor.tokenizer.bos_token
    enc = processor(images=Image.open(IMAGE).convert("RGB"), text=text, return_tensors="pt",
                    add_special_tokens=not (bos is not None and text.startswith(bos)))
    enc = {k: v.to(TORCH_DEVICE) for k, v in enc.items()}
    enc["pixel_values"] = enc["pixel_values"].to(torch.bfloat16)
    res = {"load_s": t_load - t0, "input_len": int(enc["input_ids"].shape[1])}
    if mode == "gen":
        with torch.no_grad():
            # One untimed call first: kernels and cuBLAS warm, as in a session that has run once.
            model.generate(**enc, do_sample=False, max_new_tokens=2, min_new_tokens=2,
                           output_attentions=True, return_dict_in_generate=True)
            sync()
            t1 = time.perf_counter()
            out = model.generate(**enc, do_sample=False, max_new_tokens=1, min_new_tokens=1,
                                 output_attentions=True, return_dict_in_generate=True)
            sync()
            t2 = time.perf_counter()
            out = model.generate(**enc, do_sample=False, max_new_tokens=32, min_new_tokens=32,
                                 output_attentions=True, return_dict_in_generate=True)
            sync()
            t3 = time.perf_counter()
        res.update(prefill_s=t2 - t1, generate_s=t3 - t2,
                   output_ids=out.sequences[0, res["input_len"]:].tolist())
    else:
        for p in model.parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            out = model.generate(**enc, do_sample=False, max_new_tokens=8, min_new_tokens=8)
        t1 = time.perf_counter()
        ids = enc["input_ids"][0]
        gen = out[0, ids.shape[0]:]
        n, t_len = ids.shape[0], gen.shape[0]
        seq = torch.cat([ids, gen[:-1]])
        px = enc["pixel_values"][0].clone().requires_grad_(True)
        # One untimed forward and gradient first (kernels and cuBLAS warm).
        logits, dec, vis = rr.forward(model, seq, px)
        torch.autograd.grad(logits[n - 1, gen[0]], dec + vis)
        del logits, dec, vis
        sync()
        t1 = time.perf_counter()
        logits, dec, vis = rr.forward(model, seq, px)
        llm = []
        for i in range(t_len):
            grads = torch.autograd.grad(logits[n - 1 + i, gen[i]], dec + vis, retain_graph=True)
            gd, gv = grads[: len(dec)], grads[len(dec):]
            r = torch.eye(seq.shape[0], device=TORCH_DEVICE, dtype=torch.float32)
            for a, g in zip(dec, gd):
                r = r + (g[0] * a.detach()[0]).clamp(min=0).float().mean(0) @ r
            rv = torch.eye(vis[0].shape[-1], device=TORCH_DEVICE, dtype=torch.float32)
            for a, g in zip(vis, gv):
                rv = rv + (g[0] * a.detach()[0]).clamp(min=0).float().mean(0) @ rv
            llm.append((r[n - 1 + i], rv[0, 1:]))
        sync()
        res.update(relevancy_s=time.perf_counter() - t1, tokens=t_len)
    if TORCH_DEVICE == "cuda":
        res["torch_peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    Path(result).write_text(json.dumps(res))
    return 0


def bench(bin_: str, env: dict, work: Path, out: Path, layers: int, tiny: bool) -> None:
    model_dir = work / "llava-7b-shaped"
    t0 = time.perf_counter()
    info = build_7b(model_dir, layers, tiny)
    res = RESULTS.setdefault("bench", {})
    res["model"] = {**info, "build_s": round(time.perf_counter() - t0, 1)}
    save(out)
    print(f"7B-shaped model ({layers} decoder layers, {info['parameters'] / 1e9:.2f} B parameters) "
          f"built in {res['model']['build_s']} s", flush=True)
    me = [sys.executable, str(Path(__file__).resolve())]
    # The dry run has no bf16 on lvlmscope's CPU path: f32 there.
    dev, dtype = ("cuda", "bf16") if TORCH_DEVICE == "cuda" else ("cpu", "f32")
    steps = [
        ("A_lvlmscope_run", [bin_, "run", "--model", str(model_dir), "--image", str(IMAGE), "--prompt", PROMPT,
                             "--dtype", dtype, "--device", dev, "--max-new-tokens", "32",
                             "--save", str(work / "a.session")], work / "a.session"),
        ("B_transformers_generate", me + ["--hf-worker", str(model_dir), str(work / "b.json"), "gen"], work / "b.json"),
        ("C_lvlmscope_relevancy", [bin_, "run", "--model", str(model_dir), "--image", str(IMAGE), "--prompt", PROMPT,
                                   "--dtype", dtype, "--device", dev, "--max-new-tokens", "8", "--relevancy",
                                   "--save", str(work / "c.session")], work / "c.session"),
        ("D_transformers_relevancy", me + ["--hf-worker", str(model_dir), str(work / "d.json"), "rel"], work / "d.json"),
    ]
    for label, cmd, result in steps:
        cold = None
        if label.startswith(("A_", "C_")):  # a first, untimed process: the driver's PTX cache warm
            cold = run(cmd, env, 180)[:2]
        with GpuPeak() as peak:
            rc, secs, log = run(cmd, env, 180)
        entry = {"rc": rc, "wall_s": round(secs, 2), "gpu_peak_mib": peak.peak, "gpu_delta_mib": peak.delta,
                 "last_lines": log.strip().splitlines()[-2:]}
        if cold is not None:
            entry["first_process"] = {"rc": cold[0], "wall_s": round(cold[1], 2)}
        if rc == 0 and result.suffix == ".session":
            m, t = session(result)
            entry["timings"] = m.get("timings")
            entry["output_len"] = int(t["output_ids"].shape[-1])
        elif rc == 0:
            entry["inner"] = json.loads(result.read_text())
        res[label] = entry
        save(out)
        print(f"{label}: " + json.dumps({k: v for k, v in entry.items() if k != "last_lines"}), flush=True)
    a, b = res.get("A_lvlmscope_run", {}), res.get("B_transformers_generate", {})
    c, d = res.get("C_lvlmscope_relevancy", {}), res.get("D_transformers_relevancy", {})
    ratios = {}
    if a.get("timings") and b.get("inner"):
        ta, tb = a["timings"], b["inner"]
        ours_gen = ta.get("encode_image", 0) + ta.get("prefill", 0) + ta.get("decode", 0)
        ratios["generate_time"] = ours_gen / tb["generate_s"]
        ratios["prefill_time"] = (ta.get("encode_image", 0) + ta.get("prefill", 0)) / tb["prefill_s"]
        ratios["whole_process_time"] = a["wall_s"] / b["wall_s"]
        ratios["gpu_peak_memory"] = a["gpu_peak_mib"] / max(b["gpu_peak_mib"], 1)
        positions = int(ta.get("prefill_positions", b["inner"]["input_len"]))
        floor = prefill_flops(info, positions) / H200_BF16_FLOPS
        ratios["prefill_over_flop_floor"] = (ta.get("encode_image", 0) + ta.get("prefill", 0)) / floor
        ratios["transformers_prefill_over_flop_floor"] = tb["prefill_s"] / floor
        res["prefill_flop_floor_s"] = floor
    if c.get("timings") and d.get("inner"):
        ratios["relevancy_time"] = c["timings"].get("relevancy", 0) / d["inner"]["relevancy_s"]
        ratios["relevancy_whole_process_time"] = c["wall_s"] / d["wall_s"]
        ratios["relevancy_gpu_peak_memory"] = c["gpu_peak_mib"] / max(d["gpu_peak_mib"], 1)
    res["ratios_lvlmscope_over_transformers"] = ratios
    save(out)
    print("ratios (lvlmscope / transformers): " + json.dumps(ratios), flush=True)


# A span closing in lvlmscope's log: `TS LEVEL outer{..}:inner{..}: target: close time.busy=X time.idle=Y`.
CLOSE = re.compile(r"^\S+\s+[A-Z]+\s+(?P<context>.*): (?P<target>\S+): close "
                   r"time\.busy=(?P<busy>[\d.]+)(?P<unit>ns|µs|us|ms|s) time\.idle=")
UNITS = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def span_names(context: str) -> list[str]:
    """The span names of a closing's context, outermost first (fields in braces skipped)."""
    names, depth, current = [], 0, ""
    for ch in context:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth = max(depth - 1, 0)
        elif depth == 0 and ch == ":":
            names.append(current)
            current = ""
        elif depth == 0:
            current += ch
    names.append(current)
    return [n for n in names if n]


def span_summary(text: str) -> dict:
    """Total busy seconds and count per span name, and per outermost stage and name, of a log."""
    by_name: dict[str, list] = {}
    by_stage: dict[str, list] = {}
    for line in text.splitlines():
        m = CLOSE.match(line)
        if not m:
            continue
        names = span_names(m["context"])
        if not names:
            continue
        busy = float(m["busy"]) * UNITS[m["unit"]]
        for table, key in ((by_name, names[-1]), (by_stage, "/".join([names[0], names[-1]]) if len(names) > 1 else names[0])):
            entry = table.setdefault(key, [0.0, 0])
            entry[0] += busy
            entry[1] += 1
    order = lambda t: dict(sorted(((k, {"busy_s": v[0], "count": v[1]}) for k, v in t.items()),
                                  key=lambda kv: -kv[1]["busy_s"]))
    return {"by_name": order(by_name), "by_stage": order(by_stage)}


def print_summary(title: str, summary: dict, top: int = 15) -> None:
    print(f"{title}: busy time per span name (top {top}; nested spans include their children)")
    for key in ("by_name", "by_stage"):
        print(f"  {'span' if key == 'by_name' else 'stage/span':<34} {'busy s':>9} {'count':>6} {'mean ms':>9}")
        for name, e in list(summary[key].items())[:top]:
            print(f"  {name:<34} {e['busy_s']:>9.4f} {e['count']:>6} {1e3 * e['busy_s'] / e['count']:>9.3f}")
    sys.stdout.flush()


def profile(bin_: str, env: dict, work: Path, out: Path, layers: int, tiny: bool, warm: bool) -> None:
    """A and C of the benchmark with every stage span logged and waiting for the GPU."""
    model_dir = work / "llava-7b-shaped"
    if not (model_dir / "config.json").exists():
        build_7b(model_dir, layers, tiny)
    dev, dtype = ("cuda", "bf16") if TORCH_DEVICE == "cuda" else ("cpu", "f32")
    base = [bin_, "run", "--model", str(model_dir), "--image", str(IMAGE), "--prompt", PROMPT,
            "--dtype", dtype, "--device", dev]
    res = RESULTS.setdefault("profile", {})
    for label, extra in (("A", ["--max-new-tokens", "32"]), ("C", ["--max-new-tokens", "8", "--relevancy"])):
        cmd = base + extra + ["--save", str(work / f"profile_{label}.session")]
        if not warm:  # a first, untimed process: the driver's PTX cache warm
            run(cmd, env, 180)
        log = work / f"profile_{label}.log"
        log.unlink(missing_ok=True)
        logged = {**env, "LVLMSCOPE_LOG": "lvlmscope=debug", "LVLMSCOPE_LOG_SYNC": "1",
                  "LVLMSCOPE_LOG_FILE": str(log)}
        rc, secs, text = run(cmd, logged, 300)
        entry = {"rc": rc, "wall_s": round(secs, 2), "last_lines": text.strip().splitlines()[-2:]}
        if log.exists():
            shutil.copy(log, out / log.name)
            summary = span_summary(log.read_text())
            entry["spans"] = summary
            print_summary(f"profile {label} ({' '.join(extra)})", summary)
        if rc == 0:
            entry["timings"] = session(work / f"profile_{label}.session")[0].get("timings")
        res[label] = entry
        save(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", help="the CUDA build of lvlmscope")
    ap.add_argument("--out", help="where gpu.json goes")
    ap.add_argument("--work", default="/tmp/lvlmscope-gpu")
    ap.add_argument("--layers", type=int, default=8, help="decoder layers of the 7B-shaped model (of 32)")
    ap.add_argument("--skip-bench", action="store_true")
    ap.add_argument("--bench-only", action="store_true", help="only the benchmark")
    ap.add_argument("--dry-run", action="store_true",
                    help="check the script on a machine without a GPU: torch on the CPU, narrow layers, "
                    "`--device cpu` for lvlmscope")
    ap.add_argument("--profile", action="store_true",
                    help="after the benchmark, A and C again with every stage span logged (GPU synchronised)")
    ap.add_argument("--summarize", nargs="+", metavar="LOG", help="print the span summary of lvlmscope logs and exit")
    ap.add_argument("--hf-worker", nargs=3, metavar=("MODEL", "RESULT", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    global TORCH_DEVICE
    if args.dry_run:
        TORCH_DEVICE = os.environ["LVLMSCOPE_BENCH_TORCH_DEVICE"] = "cpu"
    if args.hf_worker:
        return hf_worker(*args.hf_worker)
    if args.summarize:
        for log in args.summarize:
            print_summary(log, span_summary(Path(log).read_text()))
        return 0
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    env = cuda_env() if not args.dry_run else {k: v for k, v in os.environ.items() if k != "RUST_BACKTRACE"}
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True).stdout.strip()
    except FileNotFoundError:
        smi = "no nvidia-smi"
    rc, _, log = run([args.bin, "--version"], env, 30)
    RESULTS["machine"] = {"gpu": smi, "binary_starts": rc == 0, "version": log.strip()}
    save(out)
    print(json.dumps(RESULTS["machine"]), flush=True)
    # The most telling first (device time is short): one fixture's parity, the benchmark, then
    # the other fixtures, eval and the bad device.
    steps = [("parity", lambda: parity(args.bin, env, work, out, PARITY[:1]))]
    if not args.skip_bench:
        steps.append(("bench", lambda: bench(args.bin, env, work, out, args.layers, args.dry_run)))
    if args.profile:
        warm = not args.skip_bench
        steps.append(("profile", lambda: profile(args.bin, env, work, out, args.layers, args.dry_run, warm)))
    if args.bench_only:
        steps = steps[1:]
    else:
        steps += [
            ("parity", lambda: parity(args.bin, env, work, out, PARITY[1:])),
            ("eval", lambda: eval_parity(args.bin, env, work, out)),
            ("bad_device", lambda: bad_device(args.bin, env, work, out)),
        ]
    for name, step in steps:
        try:
            step()
        except Exception as e:  # one failing check must not stop the others
            RESULTS.setdefault("errors", []).append(f"{name}: {e!r}")
            save(out)
            print(f"{name} failed: {e!r}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
