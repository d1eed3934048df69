"""The collection judged by Ansible's own tools: sanity, lint, ansible-doc, galaxy build and install."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COLLECTION = REPO / "collections" / "ansible_collections" / "dropscope" / "drops"
MODULES = sorted(p.stem for p in (COLLECTION / "plugins" / "modules").glob("*.py") if p.stem != "__init__")
ROLES = sorted(p.name for p in (COLLECTION / "roles").iterdir() if (p / "meta" / "argument_specs.yml").exists())

# ansible-test downloads pip's bootstrap script from a host that is not reachable here; this
# stand-in installs the same pip from the package index (docs/development.md, "ansible-test").
GET_PIP = """import subprocess, sys
args = [a for a in sys.argv[1:] if a not in ('--no-setuptools', '--no-wheel')]
subprocess.check_call([sys.executable, '-m', 'ensurepip'])
subprocess.check_call([sys.executable, '-m', 'pip', 'install', '-q'] + args)
"""

pytestmark = pytest.mark.slow


def _run(argv: list[str], cwd: Path = REPO, env: dict | None = None, timeout: float = 900):
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, ANSIBLE_NOCOLOR="1", NO_COLOR="1", **(env or {})))
    return proc.returncode, proc.stdout + proc.stderr


def _pinned_pip_version() -> str:
    """The pip version ansible-test pins (it names the bootstrap file after it)."""
    import ansible_test

    requirements = Path(ansible_test.__file__).parent / "_data" / "requirements" / "ansible-test.txt"
    text = requirements.read_text() if requirements.exists() else ""
    match = re.search(r"^pip==([\d.]+)", text, re.M)
    return match.group(1) if match else "24.2"


def test_ansible_test_sanity_is_clean():
    cache = Path.home() / ".ansible" / "test" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    for version in {_pinned_pip_version(), "24.2"}:
        (cache / f"get_pip_{version.replace('.', '_')}.py").write_text(GET_PIP)
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    rc, out = _run(["ansible-test", "sanity", "--venv", "--python", python], cwd=COLLECTION, timeout=1800)
    assert rc == 0, out[-6000:]
    assert not (COLLECTION / "tests" / "sanity").exists() or not any(
        p.read_text().strip() for p in (COLLECTION / "tests" / "sanity").glob("ignore-*.txt")), "no ignore entries"


def _claimed_target_pythons() -> list[str]:
    """Every Python the collection's modules claim to run on: ansible-test's supported versions that meet
    tests/config.yml's python_requires (the modules' docs say the same)."""
    from ansible_test._internal.constants import SUPPORTED_PYTHON_VERSIONS

    config = (COLLECTION / "tests" / "config.yml").read_text()
    lowest = re.search(r'python_requires:\s*">=(\d+)\.(\d+)"', config)
    assert lowest, "tests/config.yml: modules.python_requires is missing"
    floor = (int(lowest.group(1)), int(lowest.group(2)))
    return [v for v in SUPPORTED_PYTHON_VERSIONS if tuple(map(int, v.split("."))) >= floor]


def _interpreter(version: str) -> str | None:
    """A working pythonX.Y: on PATH, or one of pyenv's versions (only the global one is on PATH there)."""
    candidates = [os.environ.get(f"DROPSCOPE_PYTHON{version.replace('.', '')}", "")]
    candidates += sorted(str(p) for p in (Path.home() / ".pyenv" / "versions").glob(f"{version}.*/bin/python{version}"))
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, "-c", "import venv, ensurepip"], capture_output=True).returncode == 0:
            return candidate
    return None


CONTROLLER_PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"


@pytest.mark.parametrize("version", [v for v in _claimed_target_pythons() if v != CONTROLLER_PYTHON])
def test_modules_compile_and_import_on_every_target_python(version, tmp_path):
    """ansible-test's target-side sanity (compile, import) on each claimed Python; the full set runs above."""
    python = _interpreter(version)
    assert python, (f"no working python{version} (pyenv version {version}.x or DROPSCOPE_PYTHON"
                    f"{version.replace('.', '')}); .ci/install checks for it")
    (tmp_path / f"python{version}").symlink_to(python)
    rc, out = _run(["ansible-test", "sanity", "--test", "compile", "--test", "import", "--venv", "--python", version],
                   cwd=COLLECTION, env={"PATH": f"{tmp_path}:{os.environ['PATH']}"}, timeout=900)
    assert rc == 0, out[-6000:]
    assert f'Running sanity test "compile" on Python {version}' in out


def test_ansible_lint_production_profile_is_clean():
    rc, out = _run([sys.executable, "-m", "ansiblelint", "--offline"])
    assert rc == 0, out[-6000:]
    assert "Profile 'production' was required, and it passed" in out


@pytest.mark.parametrize("module", MODULES)
def test_ansible_doc_renders_every_module(module):
    rc, out = _run(["ansible-doc", f"dropscope.drops.{module}"])
    assert rc == 0, out
    source = (COLLECTION / "plugins" / "modules" / f"{module}.py").read_text()
    has_options = re.search(r"^options:\s*\n\s+\w", source, re.M)  # `options: {}` renders no OPTIONS
    for section in ("OPTIONS",) * bool(has_options) + ("EXAMPLES", "RETURN VALUES", "ATTRIBUTES"):
        assert section in out, f"{module}: no {section} in ansible-doc output"


@pytest.mark.parametrize("role", ROLES)
def test_ansible_doc_renders_every_role_argument_spec(role):
    rc, out = _run(["ansible-doc", "-t", "role", f"dropscope.drops.{role}"])
    assert rc == 0, out
    assert re.search(r"ENTRY POINT: \W*main", out) and "Options" in out, out


def test_galaxy_build_and_install(tmp_path):
    rc, out = _run(["ansible-galaxy", "collection", "build", str(COLLECTION), "--output-path", str(tmp_path)])
    assert rc == 0, out
    tarball = tmp_path / "dropscope-drops-0.1.0.tar.gz"
    assert tarball.exists()
    installed = tmp_path / "installed"
    # Outside the repository: its ansible.cfg would find the development copy "already installed".
    rc, out = _run(["ansible-galaxy", "collection", "install", str(tarball), "-p", str(installed)], cwd=tmp_path)
    assert rc == 0, out
    env = {"ANSIBLE_COLLECTIONS_PATH": str(installed)}
    rc, out = _run(["ansible-galaxy", "collection", "list", "dropscope.drops"], cwd=tmp_path, env=env)
    assert rc == 0 and "dropscope.drops 0.1.0" in out, out
    rc, out = _run(["ansible-galaxy", "collection", "verify", "--offline", "dropscope.drops"], cwd=tmp_path, env=env)
    assert rc == 0, out
    # The installed copy works on its own: its modules document and run.
    rc, out = _run(["ansible-doc", "dropscope.drops.drop_counters"], cwd=tmp_path, env=env)
    assert rc == 0 and "drop_counters" in out, out
    rc, out = _run(["ansible", "localhost", "-m", "dropscope.drops.drop_counters", "-a", "ethtool=false"],
                   cwd=tmp_path, env=env, timeout=120)
    assert rc == 0 and '"UdpNoPorts"' in out, out[-3000:]
    # Nothing of the development tree leaks into the tarball.
    rc, out = _run(["tar", "-tzf", str(tarball)])
    assert "tests/output" not in out and ".tar.gz" not in out


def test_no_shell_and_security_rules_clean():
    rc, out = _run([sys.executable, "-m", "ruff", "check", "--select", "S", "--ignore", "S101,S603,S607",
                    "report", "collections", "benchmarks"])
    assert rc == 0, out
    offenders = [str(p.relative_to(REPO)) for p in REPO.glob("**/*.py")
                 if "shell=True" in p.read_text(errors="replace") and "tests" not in p.parts and ".venv" not in p.parts]
    assert offenders == []


def test_execution_environment_build_context(tmp_path):
    """execution-environment.yml is valid for ansible-builder and installs the collection and the package."""
    files = REPO / "ee"
    files.mkdir(exist_ok=True)
    rc, out = _run(["ansible-galaxy", "collection", "build", str(COLLECTION), "--output-path", str(files), "--force"])
    assert rc == 0, out
    rc, out = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(files), "."])
    assert rc == 0, out
    context = tmp_path / "context"
    rc, out = _run(["ansible-builder", "create", "-f", "execution-environment.yml", "--context", str(context)])
    assert rc == 0, out
    containerfile = next(p for p in context.iterdir() if p.name in ("Containerfile", "Dockerfile")).read_text()
    assert "dropscope-drops-0.1.0.tar.gz" in containerfile
    assert "pip install --no-deps /tmp/dropscope-0.1.0-py3-none-any.whl" in containerfile
    assert (context / "_build" / "dropscope-drops-0.1.0.tar.gz").exists()
