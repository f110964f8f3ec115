"""Datasets: shard format, builders (shakespeare, fineweb), tokenizer byte accounting, manifest, batch stream."""
