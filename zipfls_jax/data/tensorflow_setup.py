"""How TensorFlow and tfds behave in this process: on the host CPU, quiet in logs.

The input pipelines use TensorFlow only for tf.data on the host; letting it
see GPUs/TPUs would reserve accelerator memory JAX needs. Every module here
that runs TensorFlow imports this one first (the package's __init__ has
already quietened TensorFlow's C++ notices). Nothing else belongs here.
"""
import sys

import tensorflow as tf
import tensorflow_datasets as tfds


def keep_tensorflow_off_accelerators() -> None:
  """Hides GPUs and TPUs from TensorFlow (a no-op once TF has started)."""
  for kind in ("GPU", "TPU"):
    try:
      tf.config.set_visible_devices([], kind)
    except (RuntimeError, ValueError):
      # RuntimeError: TF's devices are already initialised, so TF already
      # runs where it runs; ValueError: no such device kind here.
      pass


def progress_bars_on_terminals_only() -> None:
  """Turns tfds's progress bars off unless stderr is a terminal.

  In a log file their carriage returns and cursor moves are raw escape
  codes, hundreds of lines per dataset. Called before tfds prepares a
  dataset; it leaves bars on for an interactive user.
  """
  if not sys.stderr.isatty():
    tfds.disable_progress_bar()


keep_tensorflow_off_accelerators()
