"""The zero-downtime proof: an open-loop load test through a whole migration.

`driftgate loadtest` starts the embedded database and two gateway replicas (or targets
running gateways with --url), drives a migration through the admin API under load, and
reports failed requests, lost writes and resurrected deletes per phase, as JSON and a PNG.
"""
