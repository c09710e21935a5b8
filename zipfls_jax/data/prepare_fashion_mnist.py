"""Command line: prepare tfds's `fashion_mnist`, offline if need be.

    python -m zipfls_jax.data.prepare_fashion_mnist --data_dir=DIR

See `zipfls_jax.data.fashion_mnist.prepare_fashion_mnist` for the sources it
tries. This module is only an entry point; import the function from
`zipfls_jax.data` instead of importing this module.
"""
from absl import app
from absl import flags

_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "tfds data dir (default: tfds's default)."
)
_ALLOW_APT = flags.DEFINE_bool(
    "allow_apt", True, "Install the Debian package dataset-fashion-mnist "
    "with apt-get (as root) when nothing else works."
)
_IDX_DIR = flags.DEFINE_string(
    "idx_dir", None, "Folder with the four Fashion-MNIST IDX files."
)


def main(argv):
  del argv
  from zipfls_jax.data.fashion_mnist import prepare_fashion_mnist  # pylint: disable=g-import-not-at-top
  path = prepare_fashion_mnist(
      _DATA_DIR.value, allow_apt=_ALLOW_APT.value, idx_dir=_IDX_DIR.value
  )
  print(f"fashion_mnist ready in {path}")


if __name__ == "__main__":
  app.run(main)
