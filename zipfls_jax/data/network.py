"""A quick, bounded "can we download from here?" check.

tfds retries an unreachable download for minutes; every path that may
download asks `can_reach` first and fails fast with instructions instead.
This module must never download anything itself.
"""
from __future__ import annotations

import threading
import urllib.request


def can_reach(url: str, *, timeout_s: float = 3.0) -> bool:
  """True when an HTTP HEAD request to `url` succeeds within `timeout_s`.

  The request runs in a daemon thread joined with a deadline, so a stuck
  DNS lookup (which ignores socket timeouts) cannot stall the caller either.
  Proxies from the environment are honoured, as tfds would honour them.
  """
  result = []

  def probe():
    try:
      request = urllib.request.Request(url, method="HEAD")
      with urllib.request.urlopen(request, timeout=timeout_s) as response:
        result.append(response.status < 400)
    except Exception:  # pylint: disable=broad-except
      # Any failure (DNS, refused, TLS, HTTP error) means "do not download".
      result.append(False)

  thread = threading.Thread(target=probe, daemon=True)
  thread.start()
  thread.join(timeout_s + 0.5)
  return bool(result and result[0])
