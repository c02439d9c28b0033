"""The audit log: one tamper-evident event per call, journaled locally before the response
completes and shipped to SQL in batches (journal.py, shipper.py), verified, exported and pruned
by `tollgate audit` (verify.py, export.py, prune.py)."""
