"""Device profiles: declarative YAML, one file per device (data only).

Loaded and validated by :mod:`edge_sdk.profiles`.
"""
