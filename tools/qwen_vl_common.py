"""Shared pieces of the Qwen2-VL / Qwen2.5-VL fixtures (tools/make_qwen_vl_fixtures.py, tools/qwen_vl_relevancy.py).

- the Qwen-VL tokenizer (byte-level BPE with the family's special tokens) and chat template
  (the one shipped in Qwen/Qwen2-VL-2B-Instruct's chat_template.json, also Qwen2.5-VL's);
- `record_vision_attention`: a context manager that keeps, per vision block, the attention
  probabilities of every chunk the eager path computes (one chunk per image for full attention,
  one per window for Qwen2.5-VL's window attention), still in the autograd graph;
- `assemble`: those chunks placed block-diagonally into one [H, P, P] matrix, in the processor's
  patch order (Qwen2.5-VL permutes the patches into window order inside the tower);
- `forward`: the one-pass forward (vision tower, features scattered into the image-pad
  positions, M-RoPE position ids from transformers' get_rope_index, decoder) with every attention
  tensor returned.
"""

from __future__ import annotations

import contextlib
import importlib

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

import family_tokenizers as ft

QWEN_VL_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                   "<|image_pad|>", "<|video_pad|>"]

# Qwen/Qwen2-VL-2B-Instruct chat_template.json (Qwen2.5-VL-*-Instruct ship the same template).
QWEN_VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% endif %}"
)


def qwen_vl_tokenizer() -> Tokenizer:
    """Qwen2-like byte-level BPE (GPT-2 regex, no BOS) with the Qwen-VL special tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    corpus = ft._corpus("qwen2") + ["system\nYou are a helpful assistant.\n"] * 20
    tok.train_from_iterator(corpus, trainer=ft._trainer(QWEN_VL_SPECIAL, pre_tokenizers.ByteLevel.alphabet()))
    return tok


def _modeling(model):
    return importlib.import_module(type(model).__module__)


@contextlib.contextmanager
def record_vision_attention(model):
    """Collect the vision blocks' attention probabilities: a list (per block call) of chunk lists.

    The eager path of the vision attention splits the patches by cu_seqlens and runs one softmax
    per chunk; each chunk's [1, H, n, n] probabilities are appended, in call order.
    """
    mod = _modeling(model)
    vision_attn_cls = tuple(c for n, c in vars(mod).items() if isinstance(c, type) and n.endswith("VisionAttention"))
    original = mod.eager_attention_forward
    calls: list[list[torch.Tensor]] = []
    current: dict = {"module": None}

    def recording(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        out, weights = original(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
        if isinstance(module, vision_attn_cls):
            if current["module"] is not module:
                calls.append([])
                current["module"] = module
            calls[-1].append(weights)
        return out, weights

    mod.eager_attention_forward = recording
    try:
        yield calls
    finally:
        mod.eager_attention_forward = original


def patch_permutation(model, grid_thw: torch.Tensor) -> torch.Tensor | None:
    """Qwen2.5-VL: perm[i] = processor patch index at internal (window-ordered) position i; None for Qwen2-VL."""
    vis = model.model.visual
    if not hasattr(vis, "fullatt_block_indexes"):
        return None
    from transformers.vision_utils import get_vision_window_index

    window_index, _ = get_vision_window_index(grid_thw, spatial_merge_size=vis.spatial_merge_size,
                                              window_size=vis.window_size, patch_size=vis.patch_size)
    unit = vis.spatial_merge_unit
    return (window_index[:, None] * unit + torch.arange(unit)[None]).flatten()


def assemble(chunks: list[torch.Tensor], perm: torch.Tensor | None) -> torch.Tensor:
    """Chunks [1,H,n_i,n_i] -> block-diagonal [H,P,P] in processor patch order."""
    h = chunks[0].shape[1]
    p = sum(c.shape[-1] for c in chunks)
    full = chunks[0].new_zeros(h, p, p)
    o = 0
    for c in chunks:
        n = c.shape[-1]
        full[:, o:o + n, o:o + n] = c[0]
        o += n
    if perm is None:
        return full
    out = torch.empty_like(full)
    out[:, perm[:, None], perm[None, :]] = full
    return out


def mm_token_type_ids(model, seq: torch.Tensor, n_prompt: int) -> torch.Tensor:
    prompt = torch.arange(seq.shape[0]) < n_prompt
    return ((seq == model.config.image_token_id) & prompt).to(torch.int32)


def rope_index(model, seq: torch.Tensor, grid_thw: torch.Tensor, n_prompt: int) -> torch.Tensor:
    """transformers' get_rope_index over seq [S] -> position_ids [3, S]."""
    pos, _ = model.model.get_rope_index(seq[None], mm_token_type_ids=mm_token_type_ids(model, seq, n_prompt)[None],
                                        image_grid_thw=grid_thw, attention_mask=torch.ones_like(seq)[None])
    return pos[:, 0]


def forward(model, seq: torch.Tensor, pixel_values: torch.Tensor, grid_thw: torch.Tensor, n_prompt: int):
    """One eager forward over seq [S] with every attention in the autograd graph.

    Returns dict: logits [S,V], dec (per layer [1,H,S,S]), vis_chunks (per vision block, list of
    [1,Hv,n,n] chunks in the tower's internal order), features [F,D] (merger output in
    processor order), position_ids [3,S], hidden_states (decoder, tuple).
    """
    with record_vision_attention(model) as calls:
        vout = model.model.visual(pixel_values, grid_thw=grid_thw)
    feats = vout.pooler_output
    embeds = model.model.get_input_embeddings()(seq[None]).clone()
    pos = mm_token_type_ids(model, seq, n_prompt).bool().nonzero().flatten()
    assert pos.shape[0] == feats.shape[0], (pos.shape, feats.shape)
    embeds[0, pos] = feats.to(embeds.dtype)
    position_ids = rope_index(model, seq, grid_thw, n_prompt)
    lm = model.model.language_model(inputs_embeds=embeds, position_ids=position_ids[:, None, :],
                                    output_attentions=True, output_hidden_states=True)
    logits = model.lm_head(lm.last_hidden_state)[0]
    return {"logits": logits, "dec": list(lm.attentions), "vis_chunks": calls, "features": feats,
            "position_ids": position_ids, "hidden_states": lm.hidden_states,
            "vision_last_hidden": vout.last_hidden_state}
