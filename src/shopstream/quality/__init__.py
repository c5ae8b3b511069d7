"""The quality agent's checks: what they are (:mod:`.spec`, YAML per table), how one run judges
the warehouse (:mod:`.engine`, one module per kind of check in :mod:`.checks`), and what a
result is (:mod:`.results`, rows of ``monitoring.data_quality_checks``).

The plain-language analysis of failed and warning checks lives in
:mod:`shopstream.genai.data_quality_agent`.
"""
