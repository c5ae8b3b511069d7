"""What tests (and benchmarks) share: PostgreSQL fixtures, collector processes, pgoutput message
builders, real peers (Debezium) and ways to compare with them. Test files import only from here,
never from one another (ruff's banned-api rule in pyproject.toml)."""
