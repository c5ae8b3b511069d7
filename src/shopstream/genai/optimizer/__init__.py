"""The SQL cost optimizer's parts; :mod:`shopstream.genai.sql_optimizer` puts them together.

- :mod:`.findings`: what a report is made of (findings, costs, rewrites, the report);
- :mod:`.query`: one query parsed and resolved against the warehouse's tables;
- :mod:`.catalog`: the warehouse's tables as the rules see them (columns, types, sizes,
  partitioning, clustering, keys);
- :mod:`.rules`: the anti-patterns, each with its evidence, a concrete fix and, where one is
  mechanical, a rewrite;
- :mod:`.cost`: bytes scanned and dollars (BigQuery's dry run; on DuckDB an estimate);
- :mod:`.verify`: a rewrite is shown only once it parses, keeps the output schema and returns
  the same rows;
- :mod:`.llm_rewrites`: rewrites asked of the configured LLM (verified the same way);
- :mod:`.report`: the report as a table, JSON or Markdown.
"""
