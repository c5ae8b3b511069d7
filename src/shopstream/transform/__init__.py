"""Staging and marts: the dbt project that ships in this package, and the runner that calls it.

``project/`` is a dbt project (staging, marts, monitoring). It is never run where it is
installed: :mod:`.workspace` copies it into ``<data_dir>/transform`` and writes the models of
every captured table next to it (:mod:`.cdc_models`), and :mod:`.runner` calls dbt in-process
with a profile made from the settings.
"""
