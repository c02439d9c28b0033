"""The batched tier: jobs of many calls run on spare capacity (docs/batch.md)."""
