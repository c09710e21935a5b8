"""zipfls_jax: Zipf's Label Smoothing (ECCV 2022) in JAX/Flax.

The core loss needs only jax and numpy; everything that trains
(models, tfds pipelines, checkpoints) lives behind the `experiments` extra
so that `import zipfls_jax` never pulls TensorFlow.
"""
from setuptools import find_packages, setup

CORE = [
    # 0.8: explicit-sharding meshes and `.at[...].add(out_sharding=)`, which the
    # loss's scatters use; the loss's tests pass on jax 0.8.0 through 0.12.
    "jax>=0.8.0",
    "numpy>=1.24",
]
MODELS = [
    "flax>=0.8.5",
    "optax>=0.2.3",
]
EXPERIMENTS = MODELS + [
    # tensorflow-cpu keeps TensorFlow off the accelerators; it is only
    # published for Linux x86_64, elsewhere the plain wheel is CPU-capable.
    "tensorflow-cpu>=2.16; sys_platform == 'linux' and platform_machine == 'x86_64'",
    "tensorflow>=2.16; sys_platform != 'linux' or platform_machine != 'x86_64'",
    "tensorflow-datasets>=4.9.4",
    # tfds 4.9.x imports it without declaring it.
    "importlib_resources>=5.0",
    "absl-py>=1.4",
    "ml_collections>=0.1.1",
    "orbax-checkpoint>=0.6",
    "matplotlib>=3.7",
]
TEST = EXPERIMENTS + [
    "scipy>=1.10",
    # The tests' variants (jit and eager) and assert_max_traces; the library
    # itself does not import chex.
    "chex>=0.1.86",
    "pytest>=7.4",
    "pytest-xdist>=3.3",
]

setup(
    name="zipfls_jax",
    version="0.1.0",
    description="Zipf's Label Smoothing (ECCV 2022) for JAX/Flax",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["zipfls_jax", "zipfls_jax.*"]),
    python_requires=">=3.10",
    install_requires=CORE,
    extras_require={
        "models": MODELS,
        "experiments": EXPERIMENTS,
        "test": TEST,
    },
    license="Apache-2.0",
)
