"""What survives a crash: job records, the stores (memory, SQLite), the batch anchor,
resume and downloads."""
