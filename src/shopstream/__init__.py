"""shopstream: a real-time data platform for e-commerce."""

__version__ = "0.1.0"
