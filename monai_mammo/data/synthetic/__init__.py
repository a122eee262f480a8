"""Deterministic synthetic mammography: images (``phantom``) and dataset writers."""
