//! Instrumented LLaVA on candle: CLIP vision tower, projector, LLaMA decoder.
