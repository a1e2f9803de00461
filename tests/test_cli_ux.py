"""Command-line ergonomics: shell completion, help that shows what each option takes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _complete(words: str, cword: int) -> list[str]:
    env = dict(os.environ, _GENDERTOOL_COMPLETE="complete_bash", COMP_WORDS=words, COMP_CWORD=str(cword))
    proc = subprocess.run([sys.executable, "-m", "gendertool"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_completion_options_offered(cli):
    r = cli("--help")
    assert r.exit_code == 0
    assert "--install-completion" in r.stdout and "--show-completion" in r.stdout


def test_completion_completes_commands_and_options():
    assert _complete("gendertool ins", 1) == ["inspect"]
    assert _complete("gendertool bench --pl", 2) == ["--plots"]
    assert "fix-padding" in _complete("gendertool model ", 2)


def test_show_completion_prints_a_script(cli, monkeypatch):
    monkeypatch.setenv("SHELL", "/bin/bash")
    r = cli("--show-completion", "bash")
    assert r.exit_code == 0
    assert "_GENDERTOOL_COMPLETE=complete_bash" in r.stdout


def _all_commands():
    import typer.main

    from gendertool.cli import app

    def walk(cmd, path):
        subs = getattr(cmd, "commands", {})
        if not subs:
            yield path
        for name, sub in subs.items():
            yield from walk(sub, [*path, name])

    return list(walk(typer.main.get_command(app), []))


@pytest.mark.parametrize("path", [[]] + _all_commands(), ids=lambda p: " ".join(p) or "gendertool")
def test_help_shows_no_type_placeholders(cli, path):
    r = cli(*path, "--help")
    assert r.exit_code == 0, r.output
    # Typer's default prints <bool> after flags and <int>/<path> after options
    for placeholder in ("<bool>", "<int>", "<float>", "<path>", "<list"):
        assert placeholder not in r.stdout, f"{' '.join(path)}: {placeholder}"


def _help_row(text: str, option: str) -> str:
    return next(line for line in text.splitlines() if f" {option} " in line)


@pytest.mark.parametrize(
    "path, option, metavar",
    [
        (["bench"], "--port", "PORT"), (["bench"], "--runs", "N"), (["bench"], "--out", "DIR"),
        (["bench"], "--compare", "PATH"), (["monitor"], "--timeout", "SECONDS"), (["monitor"], "--csv", "PATH"),
        (["build"], "--backend", "pio|idf"), (["monitor"], "--source", "sample|camera"), (["convert"], "--output", "DIR"),
        (["model", "fix-padding"], "--output", "PATH"),
        (["validate"], "--images", "DIR"), (["validate"], "--model", "MODEL"), (["inspect"], "--board", "BOARD"),
    ],
)
def test_options_show_their_metavar(cli, path, option, metavar):
    row = _help_row(cli(*path, "--help").stdout, option)
    assert f" {metavar} " in row, row


@pytest.mark.parametrize("path, flag", [(["inspect"], "--json"), (["bench"], "--profile"), (["build"], "--no-compile"),
                                        ([], "--version"), (["monitor"], "--help")])
def test_flags_show_no_value(cli, path, flag):
    row = _help_row(cli(*path, "--help").stdout, flag)
    words = row.strip("│ ").split()
    # the flag (maybe its short form), then straight the help text
    after = words[1:] if words[1] != "-h" else words[2:]
    assert after[0][0].isupper(), row


def test_usage_names_the_argument(cli):
    assert "[MODEL]" in cli("inspect", "--help").stdout


@pytest.mark.parametrize("word", ["true", "False", "1", "yes"])
def test_flag_value_is_not_taken_as_the_model(cli, word, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = cli("inspect", "--json", word)
    assert r.exit_code == 2
    assert f"'{word}' was taken as the MODEL argument" in r.stderr
    assert f"not `--json {word}`" in r.stderr
    assert "Traceback" not in r.output


def test_a_file_named_like_a_flag_value_is_still_a_model(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "true").write_bytes(b"not a flatbuffer")
    r = cli("inspect", "--json", "true")
    assert r.exit_code == 2
    assert "was taken as the MODEL" not in r.stderr  # the file's own problem is reported instead
