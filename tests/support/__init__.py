"""Helpers shared by tests and benchmarks: real peers (Debezium) and ways to compare with them."""
