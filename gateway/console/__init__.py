"""The operator console at /console: server-rendered pages over the same services as the admin API
(see setup.py for what it adds to the app, and docs/operating.md#the-console for the pages)."""
