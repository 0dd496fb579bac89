"""Grid expansion, pure: a Spec and its Endpoint in; the grid rows in run order out, as keys
and as Requests, with their costs and shards. Reads local input files, sends nothing."""
