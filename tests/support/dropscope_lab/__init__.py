"""Development tools of dropscope, never shipped in its wheel: the lab and synthetic runs.

- `cli`, `model`, `fleet`, `system`, `inject`, `traffic`: the lab, a fleet of SSH hosts as network
  namespaces on this machine with real drops injected into it (root, sshd, ip/tc/nft). Run it from the
  repository as `tests/support/lab up|down|inject …`.
- `synthetic`: run directories of any size for tests and benchmarks, written by the collection's own
  run writer (`plugins/module_utils/run_record.py`), so they have exactly the shape a real run has.

pytest has tests/support on its Python path (pyproject.toml); benchmarks add it themselves.
"""
