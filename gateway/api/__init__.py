"""HTTP layer: aiohttp app factory, handlers, request parsing, errors, metrics, OpenAPI."""
