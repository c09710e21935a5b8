"""What a training method is: its needs, its forward passes, its loss, its state.

A method (CE, label smoothing, Zipf's LS, or one of the self-distillation
baselines of docs/method.md section 4) is a frozen dataclass of its
hyperparameters that subclasses `Method` and declares:

* `data_needs`: what the input pipeline must give, a `DataNeeds`: a plain
  batch, groups of `friends + 1` same-class rows (the class-paired
  sampler), two augmented views per image, a stable example index;
* `model_needs`: what the model must return, a `ModelNeeds`: dense votes,
  intermediate exits of a given kind;
* `forward_passes`: forward passes over the batch per optimizer step (for
  the cost table);
* `loss(forward, batch, state, ...)`: its scalar loss and logged parts,
  calling `forward` once or more (each call is one training-mode forward
  pass that updates the BatchNorm statistics, as PyTorch's would);
* optionally a state carried across steps (`init_state`, updated by
  `loss`) and an epoch-boundary update (`end_epoch`), for the methods that
  remember (OLS's class matrix, PS-KD's predictions).

The train step (`zipfls_jax.training.step`) is written once against this
interface: adding a method is one module and an entry in
`zipfls_jax.training.methods.METHODS`, never a branch in the step. This
module must not import data, models, checkpointing or TensorFlow.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

Batch = Dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class DataNeeds:
  """What a method needs from the training input pipeline.

  Attributes:
    friends: 0 for the plain shuffled stream; k >= 1 for batches made of
      groups of k + 1 consecutive same-class rows (CS-KD, BAKE). Each
      device's batch must then hold whole groups.
    views: 1, or 2 for two independent augmentations of each image in
      'image' and 'image2' (DDGSD).
    index: whether each row needs its example's stable index, 'index'.
  """
  friends: int = 0
  views: int = 1
  index: bool = False


@dataclasses.dataclass(frozen=True)
class ModelNeeds:
  """What a method needs the model to return.

  Attributes:
    votes: dense votes (`ModelOutput.votes`) in the training pass.
    exit_type: None, or the kind of intermediate exits the model must have
      ('bottleneck' for BYOT's).
  """
  votes: bool = False
  exit_type: Optional[str] = None


class MethodOutput(NamedTuple):
  """What `Method.loss` returns.

  Attributes:
    loss: the scalar to differentiate, a mean over the global batch.
    parts: logged float32 scalars ('loss' and 'ce' always, then the
      method's own terms), means over the global batch.
    logits: (n, C) logits whose top-1/top-5 the step logs for training.
    labels: (n,) their labels.
    state: the method's new state (its `init_state` structure).
  """
  loss: jax.Array
  parts: Dict[str, jax.Array]
  logits: jax.Array
  labels: jax.Array
  state: Any


class Forward:
  """The model in training mode inside one step: `forward(images) -> ModelOutput`.

  Each call is one forward pass that updates the BatchNorm running
  statistics in turn, so two passes (CS-KD's anchors and friends) leave
  the statistics PyTorch would. `gradient=False` is a pass whose output
  carries no gradient to the parameters (PyTorch's `no_grad`). The dropout
  key of the first call is the step's own; later calls fold in their count.
  """

  def __init__(self, model, params, batch_stats, dropout_key: jax.Array):
    self._model = model
    self._params = params
    self.batch_stats = batch_stats
    self._dropout_key = dropout_key
    self.calls = 0

  def __call__(self, images: jax.Array, *, votes: bool = False, gradient: bool = True):
    params = self._params if gradient else jax.lax.stop_gradient(self._params)
    key = (self._dropout_key if self.calls == 0
           else jax.random.fold_in(self._dropout_key, self.calls))
    output, updates = self._model.apply(
        {"params": params, "batch_stats": self.batch_stats}, images, train=True, votes=votes,
        mutable=["batch_stats"], rngs={"dropout": key})
    self.batch_stats = updates.get("batch_stats", self.batch_stats)
    self.calls += 1
    return output if gradient else jax.lax.stop_gradient(output)


def global_mean(values: jax.Array, axis_name=None) -> jax.Array:
  """Mean over the global batch: local mean, averaged over `axis_name`.

  Exact because every device holds the same number of examples.
  """
  mean = jnp.mean(values)
  return mean if axis_name is None else jax.lax.pmean(mean, axis_name)


def plain_dict(mapping) -> Dict[str, Any]:
  """A config block (a `ConfigDict` or any mapping) as nested plain dicts."""
  if hasattr(mapping, "to_dict"):
    return mapping.to_dict()
  return {k: plain_dict(v) if isinstance(v, Mapping) or hasattr(v, "to_dict") else v
          for k, v in dict(mapping).items()}


def config_error(key: str, message: str) -> ValueError:
  return ValueError(f"config.{key}: {message}")


class Method:
  """Base of every training method; see the module docstring.

  Subclasses are frozen dataclasses whose fields are their hyperparameters.
  `name` is the value of `config.loss.method` that selects the method;
  `block` is the config block of its hyperparameters (`config.loss.<block>`,
  or None when they are flat keys of `config.loss`).
  """
  name: str = ""
  block: Optional[str] = None

  @property
  def data_needs(self) -> DataNeeds:
    return DataNeeds()

  @property
  def model_needs(self) -> ModelNeeds:
    return ModelNeeds()

  @property
  def forward_passes(self) -> int:
    """Forward passes over a batch's images per optimizer step."""
    return 1

  @property
  def needs_key(self) -> bool:
    """Whether `loss` needs a PRNG key (random target distributions)."""
    return False

  @property
  def has_epoch_update(self) -> bool:
    return type(self).end_epoch is not Method.end_epoch

  def init_state(self, num_classes: int, num_examples: int = 0) -> Any:
    """The state carried across steps (a pytree; empty by default).

    `num_examples` is the training split's size (all hosts), for methods
    that keep something per example.
    """
    del num_classes, num_examples
    return {}

  def for_run(self, *, total_steps: int, steps_per_epoch: int) -> "Method":
    """This method with the values it takes from the run's length filled in."""
    del total_steps, steps_per_epoch
    return self

  def loss(self, forward: Forward, batch: Batch, state: Any, *,
           key: Optional[jax.Array] = None, axis_name=None) -> MethodOutput:
    raise NotImplementedError

  def end_epoch(self, state: Any) -> Any:
    """The state for the next epoch, applied after an epoch's last step."""
    return state

  def check_run(self, *, batch_size: int, device_count: int, exits: bool,
                exit_type: str) -> None:
    """Refuses a run this method cannot train, naming the config keys.

    Called before any data is read. The default checks the model needs and
    that each device's batch holds whole groups of friends.
    """
    needs = self.model_needs
    if needs.exit_type is not None and not (exits and exit_type == needs.exit_type):
      raise config_error(
          "loss.method", f"{self.name!r} trains intermediate exits: set config.exits=True and "
          f"config.exit_type={needs.exit_type!r} (got config.exits={exits}, "
          f"config.exit_type={exit_type!r}).")
    group = self.data_needs.friends + 1
    per_device = batch_size // device_count
    if group > 1 and per_device % group:
      raise config_error(
          "batch_size", f"{self.name!r} reads groups of {group} same-class images and each "
          f"device's batch must hold whole groups, but config.batch_size={batch_size} over "
          f"{device_count} devices is {per_device} per device, not a multiple of {group}.")

  # --- config ---------------------------------------------------------------

  def validate(self) -> None:
    """Raises ValueError/TypeError on a bad hyperparameter (trace-time checks).

    Subclasses trace their library loss on tiny abstract arrays, so each
    value is checked once, by the function that owns it.
    """

  @classmethod
  def from_block(cls, block: Mapping[str, Any]) -> "Method":
    """Builds from the method's config block, naming any unknown key or bad value."""
    values = plain_dict(block)
    known = set(cls.default_block())
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(f"Unknown key(s) in config.loss.{cls.block}: {unknown}; expected a "
                       f"subset of {sorted(known)}.")
    try:
      method = cls(**values)
      method.validate()
    except (TypeError, ValueError) as e:
      raise type(e)(f"config.loss.{cls.block}: {e}") from e
    return method

  @classmethod
  def default_block(cls) -> Dict[str, Any]:
    """The config keys and defaults (fields with metadata config=False are not keys)."""
    return {f.name: f.default for f in dataclasses.fields(cls)
            if f.metadata.get("config", True)}


def check_weight(name: str, value) -> None:
  """A loss weight: a real number >= 0 (the method's own, no library owns it)."""
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise TypeError(f"{name} must be a number, got {type(value).__name__}.")
  if not value >= 0:   # NaN fails too
    raise ValueError(f"{name} must be >= 0, got {value}.")


def abstract(*shape: int, dtype=jnp.float32) -> jax.ShapeDtypeStruct:
  """A tiny abstract array, to trace a loss in `Method.validate`."""
  return jax.ShapeDtypeStruct(shape, dtype)


def cross_entropy(logits: jax.Array, labels: jax.Array, axis_name=None) -> jax.Array:
  """Mean CE over the global batch (float32), the 'ce' every method logs."""
  return global_mean(optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels), axis_name)
