"""`sin-batch`: many photos through the whole chain on Ray. manifest (what to run), stages (each stage as the
project's own command), store (the durable state in SQLite), report (summary table, HTML index), driver (Ray)."""
