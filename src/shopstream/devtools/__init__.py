"""Development tools, not part of the platform: a local PostgreSQL for the demo and the tests.

- :mod:`shopstream.devtools.local_postgres`: start, stop and crash a PostgreSQL cluster of our
  own (``wal_level=logical``, 127.0.0.1 only), from the system's binaries or the ``pgserver``
  wheel; the test fixtures and ``bench/cdc.py`` use it.
- :mod:`shopstream.devtools.shop_database`: the shop database that ``shopstream run
  --local-postgres`` (``make run``) captures when no ``SHOPSTREAM_POSTGRES_DSN`` is given.
"""
