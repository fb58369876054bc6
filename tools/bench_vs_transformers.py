#!/usr/bin/env python3
"""Time `lvlmscope run` against transformers `generate` on a random-weight "mini" LLaVA.

Run by hand (needs torch, transformers, tokenizers, safetensors, pillow, numpy; nothing in the
build or CI runs it):

    cargo build --release
    python tools/bench_vs_transformers.py --workdir /tmp/lvlmscope-bench [--reps 3]
    python tools/bench_vs_transformers.py --workdir /tmp/lvlmscope-bench --python-only

The mini model (made once into WORKDIR/mini-llava, about 270 MB, never committed): CLIP 336/14
(576 image tokens), 12 vision layers of width 256 (8 heads), vision_feature_layer -2, strategy
default, mlp2x_gelu projector; LLaMA decoder of 8 layers, width 512, 8 heads, vocab 32000. The
tokenizer is the fixtures' tiny BPE tokenizer with its vocabulary padded to 32000 entries. The
lm_head row of EOS is zero, so EOS (logit exactly 0) practically never wins and both sides make
all 32 tokens (the table reports the counts to check).

Each repetition times whole processes, loading included:
  A. lvlmscope run --model M --image I --prompt P --save OUT --max-new-tokens 32 --dtype f32 --device cpu
     (default capture: generated rows)
  B. the same with --capture off
  C. python (this file, --worker) : load processor and model, transformers
     generate(output_attentions=True, return_dict_in_generate=True, max_new_tokens=32,
     min_new_tokens=32), greedy, eager attention, float32
It prints the medians and three ratios: A/C time, A/B time, and the bytes of A's session file
over the bytes of all attention tensors that C's generate returned.
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
MODEL_VERSION = "mini-llava/1"
MAX_NEW = 32
PROMPT = "What is in the picture?"

MINI_VISION = dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=12, num_attention_heads=8,
                   image_size=336, patch_size=14)
MINI_TEXT = dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=8, num_attention_heads=8,
                 max_position_embeddings=2048, rms_norm_eps=1e-05, rope_theta=10000.0)
MINI_VOCAB = 32000


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


def build_mini(model_dir: Path) -> None:
    """Write the mini LLaVA folder (deterministic) unless it is already there."""
    stamp = model_dir / "BENCH_MODEL_VERSION"
    if stamp.exists() and stamp.read_text().strip() == MODEL_VERSION:
        return
    import torch
    from safetensors.torch import save_file
    from tokenizers import Tokenizer
    from transformers import AutoConfig, LlavaForConditionalGeneration

    sys.path.insert(0, str(ROOT / "tools"))
    import make_fixtures as mf

    print(f"building the mini model in {model_dir} ...", file=sys.stderr)
    if model_dir.exists():
        shutil.rmtree(model_dir)
    model_dir.mkdir(parents=True)
    tok_json = padded_tokenizer_json(MINI_VOCAB)
    tok = Tokenizer.from_str(tok_json)
    assert tok.get_vocab_size() == MINI_VOCAB, tok.get_vocab_size()
    (model_dir / "tokenizer.json").write_text(tok_json)
    ids = {t: tok.token_to_id(t) for t in mf.SPECIAL}
    spec = dict(vision=MINI_VISION, text=MINI_TEXT, tied=False, vision_feature_layer=-2, strategy="default")
    cfg = mf.config_json(spec, MINI_VOCAB, ids["<image>"], ids["<pad>"])
    mf.dump(model_dir / "config.json", cfg)
    mf.dump(model_dir / "generation_config.json",
            {"bos_token_id": ids["<s>"], "eos_token_id": ids["</s>"], "pad_token_id": ids["<pad>"]})
    mf.dump(model_dir / "preprocessor_config.json", mf.preprocessor_config(MINI_VISION["image_size"]))
    mf.dump(model_dir / "processor_config.json", {
        "image_token": "<image>", "num_additional_image_tokens": 1, "patch_size": MINI_VISION["patch_size"],
        "processor_class": "LlavaProcessor", "vision_feature_select_strategy": "default"})
    mf.dump(model_dir / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "pad_token": "<pad>", "model_max_length": 2048,
        "clean_up_tokenization_spaces": False, "chat_template": mf.CHAT_TEMPLATE})

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


def worker(model_dir: str, image_path: str, result_path: str, threads: int | None) -> int:
    """Load and generate with transformers; write a JSON result. Timed from outside as a whole."""
    t0 = time.perf_counter()
    import torch
    from PIL import Image
    from transformers import (
        CLIPImageProcessorPil,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    if threads:
        torch.set_num_threads(threads)
    t_import = time.perf_counter()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(model_dir)
    improc = CLIPImageProcessorPil.from_pretrained(model_dir)
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    processor = LlavaProcessor(
        image_processor=improc, tokenizer=tokenizer, patch_size=cfg["vision_config"]["patch_size"],
        vision_feature_select_strategy=cfg["vision_feature_select_strategy"],
        chat_template=tokenizer.chat_template, num_additional_image_tokens=1)
    model = LlavaForConditionalGeneration.from_pretrained(
        model_dir, attn_implementation="eager", dtype=torch.float32).eval()
    t_load = time.perf_counter()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    image = Image.open(image_path).convert("RGB")
    enc = processor(images=image, text=text, return_tensors="pt")
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


def main() -> int:
    ap = argparse.ArgumentParser(description="Time lvlmscope run against transformers generate.")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "lvlmscope-bench"),
                    help="cache folder for the mini model and outputs (default: %(default)s)")
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "lvlmscope"),
                    help="path of the lvlmscope binary (default: %(default)s)")
    ap.add_argument("--image", default=str(ROOT / "tests" / "fixtures" / "image.png"))
    ap.add_argument("--reps", type=int, default=3, help="repetitions per command (median reported)")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads for both sides (sets RAYON_NUM_THREADS, OMP_NUM_THREADS, torch threads)")
    ap.add_argument("--python-only", action="store_true", help="time only the transformers side")
    ap.add_argument("--json", default=None, help="also write the results as JSON to this file")
    ap.add_argument("--worker", nargs=2, metavar=("MODEL_DIR", "RESULT_JSON"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        return worker(args.worker[0], args.image, args.worker[1], args.threads)

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    model_dir = work / "mini-llava"
    build_mini(model_dir)

    env = dict(os.environ)
    if args.threads:
        env["RAYON_NUM_THREADS"] = str(args.threads)
        env["OMP_NUM_THREADS"] = str(args.threads)
    if not args.python_only and not Path(args.bin).is_file():
        print(f"error: lvlmscope binary not found at {args.bin} (build it, pass --bin, or use --python-only)",
              file=sys.stderr)
        return 2

    session = work / "session.safetensors"
    session_off = work / "session-off.safetensors"
    hf_result = work / "hf-result.json"
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
    for rep in range(args.reps):
        for name, cmd in cmds.items():  # interleaved, so drifts hit every side alike
            dt = timed(cmd, env)
            times[name].append(dt)
            print(f"rep {rep + 1}/{args.reps} {name:24s} {dt:8.2f} s", file=sys.stderr)

    med = {k: statistics.median(v) for k, v in times.items()}
    hf = json.loads(hf_result.read_text())
    res: dict = {"medians_s": med, "all_s": times, "transformers": hf, "reps": args.reps}
    rows = [("transformers generate (whole process)", f"{med['transformers']:.2f} s",
             f"{hf['output_len']} tokens, N={hf['input_len']}; load {hf['load_s']:.2f} s, "
             f"generate {hf['generate_s']:.2f} s")]
    rows.append(("transformers attention bytes", fmt_bytes(hf["attention_bytes"]), str(hf["attention_bytes"])))
    if not args.python_only:
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
    w = max(len(r[0]) for r in rows)
    print(f"median of {args.reps} run(s), whole processes, loading included, f32, cpu, "
          f"{MAX_NEW} new tokens")
    for name, val, note in rows:
        print(f"  {name:<{w}}  {val:>12}  {note}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
