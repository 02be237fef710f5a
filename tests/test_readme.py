"""The README's two commands stay true: CI runs exactly the README's test command."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _readme_command(heading: str) -> str:
    lines = (REPO / "README.md").read_text("utf-8").splitlines()
    return lines[lines.index(heading) + 1]


def test_ci_runs_the_readme_test_command() -> None:
    command = _readme_command("# set up and run the tests")
    assert command.endswith("&& pytest")
    assert command in (REPO / ".ci" / "run").read_text("utf-8").splitlines()


def test_readme_starts_with_the_two_commands() -> None:
    head = (REPO / "README.md").read_text("utf-8").splitlines()[:12]
    assert "# set up and run livswap on the built-in default (webcam -> virtual camera)" in head
    assert "# set up and run the tests" in head
    assert _readme_command(
        "# set up and run livswap on the built-in default (webcam -> virtual camera)"
    ).endswith("livswap --source me.jpg")
