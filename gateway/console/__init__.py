"""The operator console at /console: server-rendered pages over the same services as the admin API.

See setup.py for what it adds to the app, and docs/console.md for the pages."""
