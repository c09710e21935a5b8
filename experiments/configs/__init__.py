"""One `ml_collections` config file per run of SPEC section 6 (see default.py)."""
