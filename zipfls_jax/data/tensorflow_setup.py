"""Keeps TensorFlow on the host CPU: imported before any TensorFlow op runs.

The input pipelines use TensorFlow only for tf.data on the host; letting it
see GPUs/TPUs would reserve accelerator memory JAX needs. Every module here
that runs TensorFlow imports this one first. Nothing else belongs here.
"""
import tensorflow as tf


def keep_tensorflow_off_accelerators() -> None:
  """Hides GPUs and TPUs from TensorFlow (a no-op once TF has started)."""
  for kind in ("GPU", "TPU"):
    try:
      tf.config.set_visible_devices([], kind)
    except (RuntimeError, ValueError):
      # RuntimeError: TF's devices are already initialised, so TF already
      # runs where it runs; ValueError: no such device kind here.
      pass


keep_tensorflow_off_accelerators()
