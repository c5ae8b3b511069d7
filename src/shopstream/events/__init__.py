"""Contracts: behaviour events, the change envelope, JSON Schema."""
