"""Synthetic shop data: the seeded products and users, clickstream over HTTP, the OLTP workload."""
