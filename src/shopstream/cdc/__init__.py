"""Change data capture from PostgreSQL: pgoutput, value encodings, slot, reader."""
