"""PyTorch backend: model families, Muon and the train step (see backend.py)."""
