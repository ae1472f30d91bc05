"""One way into every tool: a user's error is one line and exit 2, a bug keeps its traceback,
and the package installs nothing but `alexnet_mp`."""
import ast
import configparser
import errno
import fnmatch
import glob
import importlib
import os
import subprocess
import sys

import pytest

from alexnet_mp.cli import tool
from alexnet_mp.errors import UsageError

from .conftest import ROOT
from .helpers import assert_one_line_result


def _console_scripts():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    lines = cfg["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(line.split(" = ") for line in lines)


def test_every_console_script_goes_through_the_one_wrapper():
    """A main without `tool` would print a traceback for a user's mistake."""
    scripts = _console_scripts()
    assert len(scripts) == len(glob.glob(os.path.join(ROOT, "tools", "*.py")))
    for name, target in scripts.items():
        module, func = target.split(":")
        main = getattr(importlib.import_module(module), func)
        assert main.__code__ is tool(lambda argv: 0).__code__, f"{name}: {target} is not wrapped by cli.tool"


def test_a_user_error_is_one_line_and_a_bug_keeps_its_traceback(capsys):
    def raising(exc):
        @tool
        def main(argv=None):
            raise exc
        return main

    assert_one_line_result(raising(UsageError("-b 0 is out of range"))([]), capsys, "-b 0 is out of range")
    missing = FileNotFoundError(errno.ENOENT, "No such file or directory", "/no/such.pt")
    assert_one_line_result(raising(missing)([]), capsys, "/no/such.pt does not exist: check the path")
    with pytest.raises(RuntimeError, match="a bug"):
        raising(RuntimeError("a bug"))([])
    with pytest.raises(OSError):                     # not the user's to fix: a bug's traceback
        raising(OSError(errno.EBADF, "Bad file descriptor"))([])
    assert capsys.readouterr().err == ""


def test_ctrl_c_in_a_tool_is_one_line_and_exit_130(capsys):
    @tool
    def main(argv=None):
        raise KeyboardInterrupt
    assert main([]) == 130
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: interrupted (Ctrl-C)")


def test_only_alexnet_mp_is_installed_and_no_script_edits_sys_path():
    """A top-level `tools` package in site-packages would clash with other projects'."""
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    include = cfg["options.packages.find"]["include"].replace(",", " ").split()
    packages = []
    for d, dirs, files in os.walk(ROOT):
        dirs[:] = [x for x in dirs if not x.startswith(".") and x not in ("build", "runs")]
        if "__init__.py" in files:
            packages.append(os.path.relpath(d, ROOT).replace(os.sep, "."))
    installed = sorted(p for p in packages if any(fnmatch.fnmatch(p, pat) for pat in include))
    assert installed and all(p == "alexnet_mp" or p.startswith("alexnet_mp.") for p in installed), installed
    assert not os.path.exists(os.path.join(ROOT, "tools", "__init__.py"))
    for script in glob.glob(os.path.join(ROOT, "tools", "*.py")):
        tree = ast.parse(open(script).read())
        names = {ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        assert "sys.path" not in names, script


def test_a_tool_script_runs_from_any_folder_without_pythonpath(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "evaluate.py"), "--help"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--checkpoint" in proc.stdout, proc.stderr
