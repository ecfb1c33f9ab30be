"""Start-up: the command line's help and `methods` load neither numpy, scipy, pandas nor the engine, and
the static lists they show stay equal to the code they stand in for. (Timings: benchmarks/startup.py.)"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("numpy", "scipy", "pandas", "smartmix.engine", "smartmix.policies", "smartmix.api")
SRC = str(Path(__file__).resolve().parents[1] / "src")


def loaded_after(code: str) -> tuple[list[str], str]:
    """Run ``code`` in a fresh interpreter; the heavy modules it left in ``sys.modules``, and its stdout."""
    probe = (
        "import json, sys\n"
        f"{code}\n"
        f"sys.stderr.write('\\nLOADED=' + json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert "LOADED=" in done.stderr, done.stderr
    return json.loads(done.stderr.rsplit("LOADED=", 1)[1]), done.stdout


def run_cli(*args: str) -> str:
    return (
        "from smartmix.cli import main\n"
        f"sys.argv = ['smartmix', *{list(args)!r}]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
    )


def test_importing_the_cli_loads_nothing_heavy():
    loaded, _ = loaded_after("import smartmix.cli")
    assert loaded == []


@pytest.mark.parametrize("args", [("--help",), ("methods",), ("run", "--help"), ("serve", "--help")])
def test_help_and_methods_load_nothing_heavy(args):
    loaded, out = loaded_after(run_cli(*args))
    assert loaded == [] and out.strip()


def test_the_probe_does_see_a_heavy_import():  # the check above can fail
    loaded, _ = loaded_after("import smartmix\nsmartmix.Pool")
    assert loaded == []  # models.py is light
    loaded, _ = loaded_after("import smartmix\nsmartmix.run")
    assert {"numpy", "smartmix.engine", "smartmix.api"} <= set(loaded)


def test_methods_lists_every_method_from_the_catalog():
    _, out = loaded_after(run_cli("methods"))
    from smartmix.catalog import METHOD_CATALOG

    for info in METHOD_CATALOG:
        assert info.name in out
    assert out.count("NO guarantee") == sum(not info.guaranteed for info in METHOD_CATALOG)


def test_the_catalog_matches_the_policy_registry():
    from smartmix.catalog import METHOD_CATALOG
    from smartmix.policies import Policy

    assert sorted(info.name for info in METHOD_CATALOG) == sorted(Policy.registry)
    for info in METHOD_CATALOG:
        cls = Policy.registry[info.name]
        assert info.guaranteed == cls.valid, info.name
        own = cls.__dict__.get("__doc__")
        if own:  # the description is the first paragraph of the class's own docstring
            assert info.description == " ".join(inspect.cleandoc(own).split("\n\n")[0].split()), info.name
        else:
            assert info.description.strip(), info.name


def test_lazy_commands_show_their_real_help_and_run():
    from smartmix.cli import LAZY_COMMANDS, load_command

    for name, (_, _, line) in LAZY_COMMANDS.items():
        command = load_command(name)
        assert " ".join((command.help or "").split("\n\n")[0].split()) == line, name
    _, out = loaded_after(run_cli("bench", "--help"))
    assert "--targets" in out


def test_the_package_exports_load_on_first_use():
    import smartmix

    for name in smartmix.__all__:
        value = getattr(smartmix, name)
        assert value is getattr(__import__(smartmix._EXPORTS[name], fromlist=[name]), name)
    assert sorted(smartmix.__all__) == sorted(smartmix._EXPORTS)
    with pytest.raises(AttributeError):
        smartmix.no_such_name  # noqa: B018
