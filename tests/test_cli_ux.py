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


# --------------------------------------------------------------------------- issue 20, item 9


def _params():
    """(command path, click parameter) for every parameter of every command."""
    import typer.main

    from gendertool.cli import app

    def walk(cmd, path):
        for p in getattr(cmd, "params", []):
            yield path, p
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, [*path, name])

    return list(walk(typer.main.get_command(app), []))


def test_short_options_mean_the_same_everywhere():
    meanings: dict[str, set[str]] = {}
    for _path, p in _params():
        longs = [o for o in p.opts if o.startswith("--")]
        for short in (o for o in p.opts if not o.startswith("--")):
            meanings.setdefault(short, set()).update(longs)
    assert meanings["-b"] == {"--board"}, meanings["-b"]
    # one meaning per short option; -n (how many) and -o (where output goes) have one meaning
    # under the names that read best for each command
    same_meaning = {"-n": {"--count", "--limit", "--runs"}, "-o": {"--out", "--output"}}
    confused = {short: longs for short, longs in meanings.items() if len(longs) > 1 and longs != same_meaning.get(short)}
    assert confused == {}, confused
    # --build keeps its long form only; every --board has -b
    for path, p in _params():
        if "--build" in p.opts:
            assert p.opts == ["--build"], (path, p.opts)
        if "--board" in p.opts:
            assert "-b" in p.opts, (path, p.opts)


@pytest.mark.parametrize(
    "path, option, metavar",
    [
        (["validate"], "--out", "FILE"), (["bench"], "--out", "DIR"), (["build"], "--out", "DIR"),
        (["monitor"], "--no-record-timeout", "SECONDS"), (["flash"], "--before", "MODE"), (["run"], "--board", "BOARD"),
    ],
)
def test_metavars_tell_the_truth(cli, path, option, metavar):
    row = _help_row(cli(*path, "--help").stdout, option)
    assert f" {metavar} " in row, row


@pytest.mark.parametrize("path", [[]] + _all_commands(), ids=lambda p: " ".join(p) or "gendertool")
def test_arguments_show_no_type_and_no_braces(cli, path):
    out = cli(*path, "--help").stdout
    usage = next(line for line in out.splitlines() if "Usage:" in line)
    assert "<str>" not in out and "{" not in usage, usage


def test_usage_of_model_pull_reads_name(cli):
    usage = next(line for line in cli("model", "pull", "--help").stdout.splitlines() if "Usage:" in line)
    assert usage.split() == ["Usage:", "gendertool", "model", "pull", "[OPTIONS]", "NAME"]


def test_completion_functions_offer_values(monkeypatch, tmp_path):
    from gendertool.cli import options
    from gendertool.device import ports as ports_mod
    from gendertool.device.ports import SerialPortInfo

    values = lambda items: [v for v, _ in items]  # noqa: E731
    assert values(options.complete_boards("xiao")) == ["xiao_esp32s3", "xiao_esp32s3_sense"]
    assert values(options.complete_boards("xiao_esp32s3_")) == ["xiao_esp32s3_sense"]
    assert values(options.complete_inputs("")) == ["sample", "upload", "camera"]
    assert values(options.complete_bench_inputs("")) == ["sample", "camera"]
    assert values(options.complete_backends("")) == ["pio", "idf"]
    assert values(options.complete_profiles("se")) == ["seeed-gender"]
    assert values(options.complete_after("w")) == ["watchdog-reset"]
    assert "usb-reset" in values(options.complete_before("u"))
    # detected ports, then the virtual device
    monkeypatch.setattr(ports_mod, "list_serial_ports", lambda: [
        SerialPortInfo("/dev/ttyUSB0", 0x10C4, 0xEA60, "CP2102"), SerialPortInfo("/dev/ttyACM0", 0x303A, 0x1001, "USB JTAG")])
    assert values(options.complete_ports("")) == ["/dev/ttyACM0", "/dev/ttyUSB0", "sim"]  # the ESP32-S3 first
    assert values(options.complete_ports("s")) == ["sim"]
    # a model: profiles, then .tflite files and folders here
    (tmp_path / "m.tflite").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    assert values(options.complete_models("")) == ["seeed-gender", "m.tflite", "sub/"]
    assert values(options.complete_dirs("")) == ["sub/"]


def test_tab_completes_values_through_the_shell_protocol():
    assert _complete("gendertool build --board xiao_esp32s3_", 3) == ["xiao_esp32s3_sense"]
    assert _complete("gendertool build --backend ", 3) == ["pio", "idf"]
    assert _complete("gendertool monitor --port si", 3) == ["sim"]
    assert _complete("gendertool model pull se", 3) == ["seeed-gender"]
    assert _complete("gendertool flash --after no-", 3) == ["no-reset", "no-reset-stub"]


def test_sim_address_in_use_suggests_a_free_port(cli):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        r = cli("sim", "--listen", f"127.0.0.1:{port}")
    assert r.exit_code == 2
    err = " ".join(r.stderr.split())
    import re

    m = re.search(rf"cannot listen on 127\.0\.0\.1:{port}: Address already in use .* 127\.0\.0\.1:(\d+) is free now: "
                  r"`gendertool sim --listen 127\.0\.0\.1:(\d+)`, or --listen 127\.0\.0\.1:0", err)
    assert m and m.group(1) == m.group(2) and int(m.group(1)) != port, err
    with socket.socket() as probe:  # and it is free indeed
        probe.bind(("127.0.0.1", int(m.group(1))))
