//! Raw-attention aggregations over a session (LVLM-Interpret "Attentions" tabs).
