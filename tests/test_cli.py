import json

import pytest

from jetlib import cli
from tests.conftest import run_cli


def test_every_step_has_help(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for step in ("simulate", "ingest", "inspect"):
        assert step in out
        with pytest.raises(SystemExit) as e:
            cli.main([step, "--help"])
        assert e.value.code == 0 and "--debug" in capsys.readouterr().out


def test_python_dash_m_form_works():
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("jetlib ")


@pytest.mark.parametrize("argv,expected", [
    (["ingest", "f.h5", "--shard-rows", "0"], "argument --shard-rows: must be at least 1, got 0"),
    (["ingest", "f.h5", "--test-fraction", "abc"], "argument --test-fraction: expected a number, got 'abc'"),
    (["simulate", "--n-jets", "10"], "the following arguments are required: --out"),
    (["train-everything"], "invalid choice: 'train-everything'"),
])
def test_bad_flags_are_one_line(argv, expected, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and expected in err


def test_config_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["simulate", "--n-jets", "4", "--out", str(tmp_path / "jets.txt")]) == 2
    assert capsys.readouterr().err.strip() == "jetlib simulate: error: --out must end in .h5 or .hdf5, got jets.txt"


def test_unexpected_errors_are_one_line_without_debug(monkeypatch, capsys):
    def boom(args):
        raise RuntimeError("something broke")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: _with(parser, "inspect", boom))
    assert cli.main(["inspect", "x"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: RuntimeError: something broke" in err and "--debug" in err


def _with(parser, step, func):
    parser._subparsers._group_actions[0].choices[step].set_defaults(func=func)
    return parser


@pytest.mark.slow
def test_simulate_command_end_to_end(tmp_path):
    out = tmp_path / "jets.h5"
    r = run_cli("simulate", "--n-jets", "4", "--chunk-jets", "2", "--workers", "1", "--seed", "3", "--out", out)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)  # stdout is the machine-readable result only
    assert summary["jets"] == 4 and out.exists() and not (tmp_path / "jets.h5.partial").exists()
    assert "jets/s" in r.stderr
