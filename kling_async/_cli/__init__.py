"""The command line, on the public API only: app, job files, commands, progress, results,
the report."""
