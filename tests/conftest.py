# Fixtures shared across test files live in tests/support/ and are registered here; test files
# never import from one another.
pytest_plugins = [
    "tests.support.pg_fixtures",
    "tests.support.inprocess",
    "tests.support.llm_server",
    "tests.support.llama_server",
    "tests.support.kafka_broker",
    "tests.support.pubsub_emulator",
    "tests.support.shop_warehouse",
]
