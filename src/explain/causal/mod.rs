//! CLEANN causal explanations (ordered ICD over attention matrices).
