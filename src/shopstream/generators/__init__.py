"""Synthetic shop data: the catalogue, clickstream over HTTP, the OLTP workload."""
