"""Where accepted records go: the Sink protocol and its backends (the warehouse, for now)."""
