"""zipfls_jax.xla_flags: which XLA:CPU flags the entry points set, and that XLA obeys them."""
import os
import subprocess
import sys

import pytest

from zipfls_jax import xla_flags

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"


def test_known_flags_tells_a_real_flag_from_a_made_up_one():
  names = {"xla_cpu_enable_fast_math", "xla_cpu_zipfls_no_such_flag"}
  assert xla_flags.known_flags(names) == {"xla_cpu_enable_fast_math"}


def test_only_cpu_flags_are_set():
  # xla_cpu_* flags are read by the CPU compiler only: GPU/TPU programs are unchanged.
  assert all(f.startswith("--xla_cpu_") for f in xla_flags.CPU_FLAGS)


def test_configure_appends_to_the_users_flags():
  environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  added = xla_flags.configure(environ)
  assert added == xla_flags.cpu_flags()
  assert environ["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=2", *added]


def test_configure_keeps_the_users_value_of_the_same_flag():
  mine = "--xla_cpu_experimental_ynn_fusion_type=individual_convolution"
  environ = {"XLA_FLAGS": mine}
  xla_flags.configure(environ)
  assert environ["XLA_FLAGS"].split().count(mine) == 1
  assert YNN_FLAG not in environ["XLA_FLAGS"]


def test_add_skips_unknown_flags_and_the_users_own():
  # XLA would abort the process on the made-up flag.
  environ = {"XLA_FLAGS": "--xla_cpu_enable_fast_math=true"}
  added = xla_flags.add(["--xla_cpu_zipfls_no_such_flag=1", "--xla_cpu_enable_fast_math=false",
                         "--xla_cpu_enable_fast_min_max=false"], environ)
  assert added == ["--xla_cpu_enable_fast_min_max=false"]
  assert environ["XLA_FLAGS"].split() == ["--xla_cpu_enable_fast_math=true",
                                          "--xla_cpu_enable_fast_min_max=false"]


def test_configure_adds_nothing_when_switched_off():
  environ = {"ZIPFLS_JAX_XLA_FLAGS": "0"}
  assert xla_flags.configure(environ) == []
  assert "XLA_FLAGS" not in environ


def test_configure_after_jax_started_warns_and_adds_nothing(monkeypatch):
  import jax
  jax.devices()  # the suite's backend is up
  monkeypatch.delenv("ZIPFLS_JAX_XLA_FLAGS", raising=False)
  monkeypatch.setenv("XLA_FLAGS", "")
  with pytest.warns(RuntimeWarning, match="before|after JAX started"):
    assert xla_flags.configure() == []
  assert os.environ["XLA_FLAGS"] == ""


@pytest.mark.skipif(YNN_FLAG not in xla_flags.cpu_flags(),
                    reason="this jaxlib has no YNNPACK fusion flag")
def test_convolutions_leave_ynnpack_in_a_fresh_process():
  # The compiled HLO names the library each convolution goes to: a
  # '__ynn_fusion' wrapping it without the flag, a plain convolution with it.
  program = (
      "import sys, jax, jax.numpy as jnp\n"
      "from zipfls_jax import xla_flags\n"
      "if sys.argv[1] == 'on': xla_flags.configure()\n"
      "x, w = jnp.ones((8, 16, 16, 32)), jnp.ones((3, 3, 32, 32))\n"
      "f = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME',"
      " dimension_numbers=('NHWC', 'HWIO', 'NHWC'))\n"
      "print(jax.jit(f).lower(x, w).compile().as_text())\n")
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "ZIPFLS_JAX_XLA_FLAGS")}

  def entry(mode):
    out = subprocess.run([sys.executable, "-c", program, mode], env=env, check=True,
                         capture_output=True, text=True).stdout
    return out[out.index("ENTRY"):]

  off, on = entry("off"), entry("on")
  assert "__ynn_fusion" in off
  assert "__ynn_fusion" not in on and " convolution(" in on
