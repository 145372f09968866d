"""Every console script of the project (pyproject.toml's [project.scripts]) names itself in its errors: a refused
input ends in the one line `COMMAND: error: ...` on stderr, and a command-line mistake names the command too."""

import importlib
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def refused_arguments(name: str, tmp: Path) -> list:
    """Arguments that each command refuses with one of its own errors (a file that is not there)."""
    missing_run = ["--load-config", str(tmp / "no-run" / "config.yml")]
    return {
        "sin-preprocess": [str(tmp / "no-photo.jpg"), "--output", str(tmp / "data"), "--quiet"],
        "sin-evaluate": missing_run + ["--known-object", "box"],
        "sin-export-mesh": missing_run + ["--output", str(tmp / "mesh.ply")],
        "sin-render-turntable": missing_run + ["--output", str(tmp / "turntable.gif")],
        "sin-batch": [str(tmp / "no-photos"), "--output", str(tmp / "out")],
    }[name]


def run_script(name: str, arguments: list, monkeypatch, capsys):
    """Run the console script `name` in this process as its installed wrapper does; (exit status, stderr lines)."""
    module, function = SCRIPTS[name].split(":")
    entry = getattr(importlib.import_module(module), function)
    monkeypatch.setattr(sys, "argv", [name, *arguments])
    try:
        status = entry()
    except SystemExit as stop:
        status = stop.code
    err = capsys.readouterr().err
    return status, [line for line in err.splitlines() if line.strip()]


def test_every_console_script_is_covered(tmp_path):
    assert set(SCRIPTS) == {"sin-preprocess", "sin-evaluate", "sin-export-mesh", "sin-render-turntable", "sin-batch"}
    for name in SCRIPTS:
        assert refused_arguments(name, tmp_path)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_a_refused_input_is_one_line_naming_the_command(name, tmp_path, monkeypatch, capsys):
    status, lines = run_script(name, refused_arguments(name, tmp_path), monkeypatch, capsys)
    assert status not in (0, None), lines
    assert len(lines) == 1 and lines[0].startswith(f"{name}: error: "), lines
    assert "single-image-nerf: error" not in lines[0] and "no-" in lines[0], lines


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_a_command_line_mistake_names_the_command(name, monkeypatch, capsys):
    status, lines = run_script(name, ["--no-such-option"], monkeypatch, capsys)
    assert status == 2, lines
    assert any(name in line for line in lines) and not any(".venv" in line or "/bin/" in line for line in lines), lines
