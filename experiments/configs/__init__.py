"""Configs: `paper.py` for every run of docs/method.md section 6, by argument; the demo's run."""
