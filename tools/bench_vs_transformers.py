#!/usr/bin/env python3
"""Time `lvlmscope run` against transformers `generate` on random-weight "mini" LLaVA models.

Run by hand (needs torch, transformers, tokenizers, safetensors, pillow, numpy; nothing in the
build or CI runs it):

    cargo build --release
    python tools/bench_vs_transformers.py --workdir /tmp/lvlmscope-bench [--reps 3]
    python tools/bench_vs_transformers.py --workdir /tmp/lvlmscope-bench --family gemma --family qwen2-siglip
    python tools/bench_vs_transformers.py --workdir /tmp/lvlmscope-bench --family all --json /tmp/bench.json
    python tools/bench_vs_transformers.py --workdir /tmp/lvlmscope-bench --family all --python-only

--family picks the mini model(s) (repeatable; default llama; `all` = the three). Each is made
once into WORKDIR (never committed; delete the folder to rebuild), deterministic:

  llama (WORKDIR/mini-llava, about 270 MB): CLIP 336/14 (576 image tokens), 12 vision layers of
    width 256 (8 heads), vision_feature_layer -2, strategy default, mlp2x_gelu projector; LLaMA
    decoder of 8 layers, width 512, 8 heads, vocab 32000. The tokenizer is the fixtures' tiny BPE
    tokenizer with its vocabulary padded to 32000 entries.
  gemma (WORKDIR/mini-gemma) and qwen2-siglip (WORKDIR/mini-qwen2-siglip): image 224/14 (256
    image tokens), see tools/bench_families.py: CLIP + Gemma (width 512, 6 layers, one KV head,
    head_dim 128, tied), SigLIP (no CLS, layer -1, full) + Qwen2 (width 512, 6 layers, q/k/v
    biases, tied), with the family fixtures' tokenizers and templates padded to vocab 32000.
The lm_head rows of EOS are zero, so EOS (logit exactly 0) practically never wins and both sides
make all 32 tokens (the table reports the counts to check).

Each repetition times whole processes, loading included:
  A. lvlmscope run --model M --image I --prompt P --save OUT --max-new-tokens 32 --dtype f32 --device cpu
     (default capture: generated rows)
  B. the same with --capture off
  C. python (this file, --worker) : load processor and model, transformers
     generate(output_attentions=True, return_dict_in_generate=True, max_new_tokens=32,
     min_new_tokens=32), greedy, eager attention, float32
It prints, per family, the medians and three ratios: A/C time, A/B time, and the bytes of A's
session file over the bytes of all attention tensors that C's generate returned; with several
families a summary table follows. A family that lvlmscope cannot run yet is reported as FAILED
with the last line of its error, and the others still run. The C column includes Python's
start-up and imports; its JSON (`--json`) has `import_s`, `load_s` and `generate_s` to subtract.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL_VERSION = "mini-llava/1"  # the llama mini model; see bench_families.py for the others
MAX_NEW = 32
PROMPT = "What is in the picture?"

MINI_VISION = dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=12, num_attention_heads=8,
                   image_size=336, patch_size=14)
MINI_TEXT = dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=8, num_attention_heads=8,
                 max_position_embeddings=2048, rms_norm_eps=1e-05, rope_theta=10000.0)
MINI_VOCAB = 32000
FAMILIES = ["llama", "gemma", "qwen2-siglip"]


# ----------------------------------------------------------------------------------------
# the mini model


def padded_tokenizer_json(vocab_size: int) -> str:
    """The fixtures' tokenizer with unreachable `<extra_i>` vocabulary entries up to vocab_size."""
    sys.path.insert(0, str(ROOT / "tools"))
    import make_fixtures as mf

    tok = mf.make_tokenizer()
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    n = len(vocab)
    for i in range(n, vocab_size):
        vocab[f"<extra_{i}>"] = i
    return json.dumps(spec, ensure_ascii=False)


def write_llava_folder(model_dir: Path, vision: dict, text: dict, vocab: int, max_length: int,
                       dtype: str | None = None) -> dict:
    """Everything of a CLIP + LLaMA llava-hf folder but the weights (strategy default, feature
    layer -2, the fixtures' tokenizer padded to `vocab`, their chat template); returns the
    special tokens' ids."""
    from tokenizers import Tokenizer

    sys.path.insert(0, str(ROOT / "tools"))
    import make_fixtures as mf

    tok_json = padded_tokenizer_json(vocab)
    tok = Tokenizer.from_str(tok_json)
    assert tok.get_vocab_size() == vocab, tok.get_vocab_size()
    (model_dir / "tokenizer.json").write_text(tok_json)
    ids = {t: tok.token_to_id(t) for t in mf.SPECIAL}
    spec = dict(vision=vision, text=text, tied=False, vision_feature_layer=-2, strategy="default")
    cfg = mf.config_json(spec, vocab, ids["<image>"], ids["<pad>"])
    if dtype:
        cfg["torch_dtype"] = dtype
    mf.dump(model_dir / "config.json", cfg)
    mf.dump(model_dir / "generation_config.json",
            {"bos_token_id": ids["<s>"], "eos_token_id": ids["</s>"], "pad_token_id": ids["<pad>"]})
    mf.dump(model_dir / "preprocessor_config.json", mf.preprocessor_config(vision["image_size"]))
    mf.dump(model_dir / "processor_config.json", {
        "image_token": "<image>", "num_additional_image_tokens": 1, "patch_size": vision["patch_size"],
        "processor_class": "LlavaProcessor", "vision_feature_select_strategy": "default"})
    mf.dump(model_dir / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "pad_token": "<pad>", "model_max_length": max_length,
        "clean_up_tokenization_spaces": False, "chat_template": mf.CHAT_TEMPLATE})
    return ids


def build_mini(model_dir: Path) -> None:
    """Write the mini LLaVA folder (deterministic) unless it is already there."""
    stamp = model_dir / "BENCH_MODEL_VERSION"
    if stamp.exists() and stamp.read_text().strip() == MODEL_VERSION:
        return
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig, LlavaForConditionalGeneration

    sys.path.insert(0, str(ROOT / "tools"))
    import make_fixtures as mf

    print(f"building the mini model in {model_dir} ...", file=sys.stderr)
    if model_dir.exists():
        shutil.rmtree(model_dir)
    model_dir.mkdir(parents=True)
    ids = write_llava_folder(model_dir, MINI_VISION, MINI_TEXT, MINI_VOCAB, 2048)

    torch.manual_seed(7)
    config = AutoConfig.from_pretrained(str(model_dir))
    config._attn_implementation = "eager"
    model = LlavaForConditionalGeneration(config).eval()
    mf.sharpen(model, 7, {})
    with torch.no_grad():
        model.lm_head.weight[ids["</s>"]].zero_()
    sd = {mf.to_current(k): v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    stamp.write_text(MODEL_VERSION + "\n")


# ----------------------------------------------------------------------------------------
# the transformers side (runs in its own process)


def make_processor(model_dir: str):
    """LlavaProcessor as the folder describes it: CLIP or SigLIP image processor (PIL backend),
    `processor_config.json`'s token settings, the chat template wherever the folder keeps it."""
    from transformers import CLIPImageProcessorPil, LlavaProcessor, PreTrainedTokenizerFast, SiglipImageProcessorPil

    d = Path(model_dir)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(model_dir)
    pre = json.loads((d / "preprocessor_config.json").read_text())
    siglip = pre.get("image_processor_type", "").startswith("Siglip")
    improc = (SiglipImageProcessorPil if siglip else CLIPImageProcessorPil).from_pretrained(model_dir)
    cfg = json.loads((d / "config.json").read_text())
    pcfg_path = d / "processor_config.json"
    pcfg = json.loads(pcfg_path.read_text()) if pcfg_path.exists() else {}
    template = tokenizer.chat_template
    if (d / "chat_template.jinja").exists():
        template = (d / "chat_template.jinja").read_text()
    elif (d / "chat_template.json").exists():
        template = json.loads((d / "chat_template.json").read_text())["chat_template"]
    return LlavaProcessor(
        image_processor=improc, tokenizer=tokenizer, patch_size=cfg["vision_config"]["patch_size"],
        vision_feature_select_strategy=cfg["vision_feature_select_strategy"], chat_template=template,
        num_additional_image_tokens=pcfg.get("num_additional_image_tokens", 1))


def worker(model_dir: str, image_path: str, result_path: str, threads: int | None) -> int:
    """Load and generate with transformers; write a JSON result. Timed from outside as a whole."""
    t0 = time.perf_counter()
    import torch
    from PIL import Image
    from transformers import LlavaForConditionalGeneration

    if threads:
        torch.set_num_threads(threads)
    t_import = time.perf_counter()
    processor = make_processor(model_dir)
    model = LlavaForConditionalGeneration.from_pretrained(
        model_dir, attn_implementation="eager", dtype=torch.float32).eval()
    t_load = time.perf_counter()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    bos = processor.tokenizer.bos_token
    add_special = not (bos is not None and text.startswith(bos))  # as apply_chat_template(tokenize=True)
    image = Image.open(image_path).convert("RGB")
    enc = processor(images=image, text=text, return_tensors="pt", add_special_tokens=add_special)
    with torch.no_grad():
        out = model.generate(
            **enc, do_sample=False, max_new_tokens=MAX_NEW, min_new_tokens=MAX_NEW,
            output_attentions=True, return_dict_in_generate=True)
    t_gen = time.perf_counter()
    attn_bytes = 0
    for step in out.attentions:
        for layer in step:
            attn_bytes += layer.numel() * layer.element_size()
    n_in = int(enc["input_ids"].shape[1])
    result = {
        "input_len": n_in,
        "output_len": int(out.sequences.shape[1]) - n_in,
        "output_ids": out.sequences[0, n_in:].tolist(),
        "attention_bytes": attn_bytes,
        "import_s": t_import - t0,
        "load_s": t_load - t_import,
        "generate_s": t_gen - t_load,
    }
    Path(result_path).write_text(json.dumps(result))
    return 0


# ----------------------------------------------------------------------------------------
# timing


def timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr.strip()[-2000:]}")
    return dt


def session_output_ids(path: Path) -> list[int] | None:
    """The generated ids recorded in a session file (`output_ids`), or None if unreadable."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "np") as f:
            return [int(x) for x in f.get_tensor("output_ids")]
    except Exception:  # noqa: BLE001 - a report helper; the table shows "?" instead
        return None


def fmt_bytes(n: float) -> str:
    for unit in ["B", "KiB", "MiB", "GiB"]:
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def model_dirs(work: Path, families: list[str]) -> dict[str, Path]:
    """Build (once) and return the mini model folder of each family."""
    import bench_families

    out = {}
    for fam in families:
        if fam == "llama":
            out[fam] = work / "mini-llava"
            build_mini(out[fam])
        else:
            out[fam] = work / f"mini-{fam}"
            bench_families.build(fam, out[fam])
    return out


def bench_family(fam: str, model_dir: Path, work: Path, args, env: dict) -> tuple[dict, list[tuple[str, str, str]]]:
    """Time the commands on one mini model; returns (results, table rows)."""
    session = work / f"session-{fam}.safetensors"
    session_off = work / f"session-{fam}-off.safetensors"
    hf_result = work / f"hf-result-{fam}.json"
    base = [args.bin, "run", "--model", str(model_dir), "--image", args.image, "--prompt", PROMPT,
            "--max-new-tokens", str(MAX_NEW), "--dtype", "f32", "--device", "cpu"]
    cmds = {
        "transformers": [sys.executable, str(Path(__file__).resolve()), "--image", args.image,
                         "--worker", str(model_dir), str(hf_result)]
                        + (["--threads", str(args.threads)] if args.threads else []),
    }
    if not args.python_only:
        cmds["lvlmscope"] = base + ["--save", str(session)]
        cmds["lvlmscope-capture-off"] = base + ["--save", str(session_off), "--capture", "off"]

    times: dict[str, list[float]] = {k: [] for k in cmds}
    failed: dict[str, str] = {}
    for rep in range(args.reps):
        for name, cmd in cmds.items():  # interleaved, so drifts hit every side alike
            if name in failed:
                continue
            try:
                dt = timed(cmd, env)
            except RuntimeError as e:  # e.g. a family lvlmscope does not support yet: report, go on
                failed[name] = str(e).strip().splitlines()[-1][:160]
                print(f"{fam}: {name} failed: {e}", file=sys.stderr)
                continue
            times[name].append(dt)
            print(f"{fam} rep {rep + 1}/{args.reps} {name:24s} {dt:8.2f} s", file=sys.stderr)
    if "transformers" in failed:
        return {"failed": failed}, [("transformers generate", "FAILED", failed["transformers"])]

    med = {k: statistics.median(v) for k, v in times.items() if v}
    hf = json.loads(hf_result.read_text())
    res: dict = {"medians_s": med, "all_s": times, "transformers": hf, "reps": args.reps, "failed": failed}
    rows = [("transformers generate (whole process)", f"{med['transformers']:.2f} s",
             f"{hf['output_len']} tokens, N={hf['input_len']}; load {hf['load_s']:.2f} s, "
             f"generate {hf['generate_s']:.2f} s")]
    rows.append(("transformers attention bytes", fmt_bytes(hf["attention_bytes"]), str(hf["attention_bytes"])))
    for name in failed:
        rows.append((name, "FAILED", failed[name]))
    if not args.python_only and not failed:
        sbytes = session.stat().st_size
        ids_on, ids_off = session_output_ids(session), session_output_ids(session_off)
        same = "same ids as transformers" if ids_on == hf["output_ids"] else "ids DIFFER from transformers"
        res.update({
            "session_bytes": sbytes,
            "lvlmscope_output_ids": ids_on,
            "lvlmscope_off_output_ids": ids_off,
            "lvlmscope_ids_match_transformers": ids_on == hf["output_ids"],
            "ratio_lvlmscope_over_transformers": med["lvlmscope"] / med["transformers"],
            "ratio_rows_over_capture_off": med["lvlmscope"] / med["lvlmscope-capture-off"],
            "ratio_session_over_attention_bytes": sbytes / hf["attention_bytes"],
        })
        rows += [
            ("lvlmscope run (generated rows)", f"{med['lvlmscope']:.2f} s",
             f"{len(ids_on) if ids_on is not None else '?'} tokens, {same}"),
            ("lvlmscope run --capture off", f"{med['lvlmscope-capture-off']:.2f} s",
             f"{len(ids_off) if ids_off is not None else '?'} tokens"),
            ("lvlmscope session file", fmt_bytes(sbytes), str(sbytes)),
            ("ratio lvlmscope / transformers time", f"{res['ratio_lvlmscope_over_transformers']:.3f}", ""),
            ("ratio rows / capture-off time", f"{res['ratio_rows_over_capture_off']:.3f}", ""),
            ("ratio session / attention bytes", f"{res['ratio_session_over_attention_bytes']:.4f}", ""),
        ]
    return res, rows


def main() -> int:
    ap = argparse.ArgumentParser(description="Time lvlmscope run against transformers generate.")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "lvlmscope-bench"),
                    help="cache folder for the mini models and outputs (default: %(default)s)")
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "lvlmscope"),
                    help="path of the lvlmscope binary (default: %(default)s)")
    ap.add_argument("--image", default=str(ROOT / "tests" / "fixtures" / "image.png"))
    ap.add_argument("--reps", type=int, default=3, help="repetitions per command (median reported)")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads for both sides (sets RAYON_NUM_THREADS, OMP_NUM_THREADS, torch threads)")
    ap.add_argument("--family", action="append", choices=FAMILIES + ["all"],
                    help="mini model(s) to time, repeatable (default: llama; all = every family)")
    ap.add_argument("--python-only", action="store_true", help="time only the transformers side")
    ap.add_argument("--json", default=None, help="also write the results as JSON to this file")
    ap.add_argument("--worker", nargs=2, metavar=("MODEL_DIR", "RESULT_JSON"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        return worker(args.worker[0], args.image, args.worker[1], args.threads)

    families = args.family or ["llama"]
    families = FAMILIES if "all" in families else list(dict.fromkeys(families))
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    dirs = model_dirs(work, families)

    env = dict(os.environ)
    if args.threads:
        env["RAYON_NUM_THREADS"] = str(args.threads)
        env["OMP_NUM_THREADS"] = str(args.threads)
    if not args.python_only and not Path(args.bin).is_file():
        print(f"error: lvlmscope binary not found at {args.bin} (build it, pass --bin, or use --python-only)",
              file=sys.stderr)
        return 2

    results, summary = {}, []
    for fam in families:
        res, rows = bench_family(fam, dirs[fam], work, args, env)
        results[fam] = res
        w = max(len(r[0]) for r in rows)
        print(f"[{fam}] median of {args.reps} run(s), whole processes, loading included, f32, cpu, "
              f"{MAX_NEW} new tokens ({dirs[fam]})")
        for name, val, note in rows:
            print(f"  {name:<{w}}  {val:>12}  {note}")
        med = res.get("medians_s", {})
        summary.append((fam, med.get("transformers"), med.get("lvlmscope"), med.get("lvlmscope-capture-off"),
                        res.get("ratio_lvlmscope_over_transformers"), res.get("ratio_rows_over_capture_off"),
                        res.get("lvlmscope_ids_match_transformers")))
    if len(families) > 1:
        def f(x, spec):
            return format(x, spec) if x is not None else "-".rjust(int(spec.split(".")[0]))
        print("\nfamily         transformers s  lvlmscope s  capture-off s  lvlmscope/hf  rows/off  same ids")
        for fam, hf_s, on_s, off_s, r1, r2, same in summary:
            print(f"{fam:<14} {f(hf_s, '14.2f')} {f(on_s, '12.2f')} {f(off_s, '14.2f')} {f(r1, '13.3f')} "
                  f"{f(r2, '9.3f')}  {'-' if same is None else same}")
    if args.json:
        out = results if len(families) > 1 else results[families[0]]
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
