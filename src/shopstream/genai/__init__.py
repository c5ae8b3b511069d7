"""Language models at the edges of the platform: :mod:`.llm` builds the one chat model from
settings; :mod:`.data_quality_agent` explains failed and warning checks (with a deterministic
analyst when no model is configured or the model fails); :mod:`.sql_optimizer` (with its parts
in :mod:`.optimizer`) finds what makes a query expensive and offers only verified rewrites;
:mod:`.pipeline_doc_generator` (its parts in :mod:`.docs`) writes the platform's documentation
from the code and the models."""
