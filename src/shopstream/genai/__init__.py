"""Language models at the edges of the platform: :mod:`.llm` builds the one chat model from
settings; :mod:`.data_quality_agent` explains failed and warning checks (with a deterministic
analyst when no model is configured or the model fails)."""
