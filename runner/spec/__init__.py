"""The job spec: a YAML file in; loaded with every node's location, checked against the job
schema, then checked whole (grid, limits, endpoint inputs) into a Checked, or SpecErrors."""
