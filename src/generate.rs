//! Sampling loop with KV cache that produces a Session.
