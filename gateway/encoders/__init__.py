"""Pinned embedding models: the catalog, fetching and verifying their files, ONNX inference."""
