"""A local endpoint that behaves like Aurora DSQL, on an embedded PostgreSQL."""
