//! CLIP preprocessing, chat template, tokenizer, image-token expansion.
