"""Tokenizers and chat templates of the family fixtures (used by tools/make_family_fixtures.py).

Each family gets a small BPE tokenizer trained on make_fixtures.py's corpus with the special
tokens and the pre-tokenization style of the real checkpoints:

  gemma    (as Intel/llava-gemma-2b): SentencePiece-like, spaces -> "▁" by a Replace normalizer,
           split before each "▁" (no dummy prefix), <bos> added by the post-processor; template in the
           Gemma turn format, which itself starts with {{ bos_token }}.
  mistral  (as llava-hf/bakLlava-v1-hf): LLaMA-like Metaspace (prepend "first"), <s> added by the
           post-processor; [INST] ... [/INST] template without a generation prompt.
  qwen2    (as llava-hf/llava-interleave-qwen-0.5b-hf): byte-level BPE (GPT-2 style regex), no
           BOS; ChatML template.

The templates are written for both jinja2 (transformers) and minijinja (lvlmscope, with
trim_blocks / lstrip_blocks and pycompat as transformers sets up jinja2).
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

import make_fixtures as mf

VOCAB_SIZE = 640

GEMMA_SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<image>"]
MISTRAL_SPECIAL = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "<image>", "<pad>"]
QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"]

# Gemma turn format. Accepts a message content given as a string (as Intel/llava-gemma-2b's
# users pass "<image>\n...") or as a list of {"type": ...} parts (images first, then text).
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}{{ '<image>\\n' }}{% endif %}{% endfor %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] | trim }}{% endif %}{% endfor %}"
    "{% endif %}"
    "{{ '<end_of_turn>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)

# bakLlava's llava-hf template shape: [INST] images, text [/INST]; assistant turns end in </s>.
MISTRAL_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}"
    "{{ '[INST] ' }}"
    "{% for part in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% endfor %}"
    "{% for part in message['content'] | selectattr('type', 'equalto', 'text') %}{{ part['text'] }}{% endfor %}"
    "{{ ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ ' ' + message['content'][0]['text'] + '</s> ' }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}"
    "{% endif %}"
    "{% endfor %}"
)

# ChatML as llava-interleave: images first (one "<image>\n" each), then the text.
QWEN_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% for part in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% endfor %}"
    "{% for part in message['content'] | selectattr('type', 'equalto', 'text') %}{{ part['text'] }}{% endfor %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _corpus(family: str) -> list[str]:
    """make_fixtures.py's corpus plus a few lines with the family's role words (no special tokens:
    the trainer would learn them as text)."""
    base = mf.corpus()
    roles = {"gemma": ("user", "model"), "mistral": ("USER", "ASSISTANT"), "qwen2": ("user", "assistant")}[family]
    return base + [f"{roles[0]}\n{s}\n{roles[1]}\n" for s in base[:60]]


def _trainer(special: list[str], alphabet: list[str]) -> trainers.BpeTrainer:
    return trainers.BpeTrainer(vocab_size=VOCAB_SIZE, min_frequency=2, special_tokens=special,
                               initial_alphabet=alphabet, show_progress=False)


def gemma_tokenizer() -> Tokenizer:
    """Gemma-like: Replace(" " -> "▁") normalizer, words split before each "▁", <bos> prepended."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.pre_tokenizer = pre_tokenizers.Split("\u2581", behavior="merged_with_next")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.Fuse()])
    alphabet = [chr(c) for c in range(33, 127)] + ["\n", "\u2581"]
    tok.train_from_iterator(_corpus("gemma"), trainer=_trainer(GEMMA_SPECIAL, alphabet))
    bos = tok.token_to_id("<bos>")
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", bos)])
    return tok


def mistral_tokenizer() -> Tokenizer:
    """LLaMA/Mistral-like: Metaspace (prepend "first"), <s> prepended."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    alphabet = [chr(c) for c in range(32, 127)] + ["\n", "\u2581"]
    tok.train_from_iterator(_corpus("mistral"), trainer=_trainer(MISTRAL_SPECIAL, alphabet))
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
    return tok


def qwen_tokenizer() -> Tokenizer:
    """Qwen2-like byte-level BPE: GPT-2 regex split, no prefix space, no BOS."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok.train_from_iterator(_corpus("qwen2"), trainer=_trainer(QWEN_SPECIAL, alphabet))
    return tok


def added_tokens_decoder(tok: Tokenizer, special: list[str]) -> dict:
    """tokenizer_config.json's `added_tokens_decoder` for the special tokens."""
    return {
        str(tok.token_to_id(t)): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                  "single_word": False, "special": True}
        for t in special
    }
