"""What survives a crash: job records, the stores (memory, SQLite, PostgreSQL), the batch
anchor, resume, workers' claims and downloads."""
