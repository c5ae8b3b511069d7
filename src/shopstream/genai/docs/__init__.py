"""The pipeline documentation generator's parts; :mod:`shopstream.genai.pipeline_doc_generator`
puts them together.

- :mod:`.model`: what the parts hand each other (column references, lineage, a pipeline's code);
- :mod:`.code_map`: what each pipeline's code does, read from its source (never imported or run);
- :mod:`.lineage`: table- and column-level lineage through every dbt model (sqlglot);
- :mod:`.sources`: the dbt manifest and catalog, the quality checks, the alert rules and runbooks;
- :mod:`.prose`: each page's overview paragraph (the language model's when one is set, cached;
  deterministic otherwise);
- :mod:`.pages`: the Markdown pages; :mod:`.site`: the same as a static HTML site.
"""
