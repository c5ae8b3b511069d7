"""HTTP intake of behaviour events: app, intake, Segment mapping, write keys."""
