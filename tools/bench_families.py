"""Gemma- and Qwen2/SigLIP-shaped random-weight mini LLaVA models for tools/bench_vs_transformers.py.

Made on the fly into the benchmark's work folder (a few hundred MB each, never committed), with
transformers' own classes, deterministic. Shapes (image 224, patch 14: 256 image tokens):

  gemma         CLIP 224/14, 6 layers of width 256 (8 heads), layer -2, strategy default;
                Gemma decoder of 6 layers, width 512, 8 heads, ONE KV head, head_dim 128
                (!= 512/8), mlp 2048, tanh GELU, tied embeddings; Gemma turn template
  qwen2-siglip  SigLIP 224/14, 6 layers of width 256 (8 heads), no CLS, layer -1, strategy full;
                Qwen2 decoder of 6 layers, width 512, 8 heads, 2 KV heads, mlp 2048, q/k/v
                biases, tied embeddings; ChatML template

Vocabularies are the family fixtures' tokenizers padded with unreachable `<extra_i>` entries to
32000. The lm_head rows of the EOS ids are zero (so are the tied embedding rows, which no input
uses): EOS has logit exactly 0 and practically never wins, so both sides make every token.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

VOCAB = 32000
VERSION = "mini-family/1"

CLIP_224 = dict(model_type="clip_vision_model", hidden_size=256, intermediate_size=1024, num_hidden_layers=6,
                num_attention_heads=8, image_size=224, patch_size=14)
SIGLIP_224 = dict(model_type="siglip_vision_model", hidden_size=256, intermediate_size=1024, num_hidden_layers=6,
                  num_attention_heads=8, image_size=224, patch_size=14, vision_use_head=False)

MINIS = {
    "gemma": dict(
        seed=21, family="gemma", layout="current", tied=True, template_in="tokenizer_config",
        vision=CLIP_224,
        text=dict(model_type="gemma", hidden_size=512, intermediate_size=2048, num_hidden_layers=6,
                  num_attention_heads=8, num_key_value_heads=1, head_dim=128, hidden_act="gelu_pytorch_tanh",
                  max_position_embeddings=2048, rms_norm_eps=1e-06, rope_theta=10000.0,
                  tie_word_embeddings=True),
        vision_feature_layer=-2, strategy="default",
    ),
    "qwen2-siglip": dict(
        seed=22, family="qwen2", layout="current", tied=True, template_in="chat_template_json",
        vision=SIGLIP_224,
        text=dict(model_type="qwen2", hidden_size=512, intermediate_size=2048, num_hidden_layers=6,
                  num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=2048,
                  rms_norm_eps=1e-06, rope_theta=1000000.0, use_sliding_window=False,
                  tie_word_embeddings=True),
        vision_feature_layer=-1, strategy="full",
    ),
}


def padded(tok, vocab_size: int):
    """The tokenizer with unreachable `<extra_i>` vocabulary entries up to vocab_size."""
    from tokenizers import Tokenizer

    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for i in range(len(vocab), vocab_size):
        vocab[f"<extra_{i}>"] = i
    out = Tokenizer.from_str(json.dumps(spec, ensure_ascii=False))
    assert out.get_vocab_size() == vocab_size, out.get_vocab_size()
    return out


def build(name: str, model_dir: Path) -> None:
    """Write the mini model `name` (a key of MINIS) into model_dir unless it is already there."""
    stamp = model_dir / "BENCH_MODEL_VERSION"
    if stamp.exists() and stamp.read_text().strip() == f"{VERSION}/{name}":
        return
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig, LlavaForConditionalGeneration

    import make_family_fixtures as mff
    import make_fixtures as mf

    print(f"building the {name} mini model in {model_dir} ...", file=sys.stderr)
    spec = MINIS[name]
    fam = mff.FAMILY[spec["family"]]
    if model_dir.exists():
        shutil.rmtree(model_dir)
    model_dir.mkdir(parents=True)
    tok = padded(fam["tokenizer"](), VOCAB)
    ids = mff.write_folder(model_dir, spec, tok, fam)
    tcfg_path = model_dir / "tokenizer_config.json"
    tcfg = json.loads(tcfg_path.read_text())
    tcfg["model_max_length"] = 2048
    mf.dump(tcfg_path, tcfg)
    torch.manual_seed(spec["seed"])
    config = AutoConfig.from_pretrained(str(model_dir))
    config._attn_implementation = "eager"
    model = LlavaForConditionalGeneration(config).eval()
    mf.sharpen(model, spec["seed"], {})
    model.tie_weights()
    with torch.no_grad():
        for t in [fam["eos"]] + fam["extra_eos"]:
            model.lm_head.weight[ids[t]].zero_()
    sd = {mf.to_current(k): v.detach().contiguous() for k, v in model.state_dict().items()}
    sd.pop("lm_head.weight")
    save_file(sd, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    stamp.write_text(f"{VERSION}/{name}\n")
