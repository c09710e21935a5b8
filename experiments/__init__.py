"""Experiments of the paper: entry points (`train`, `demo`, `results_sheet`) and configs."""
