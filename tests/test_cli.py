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


def test_unexpected_errors_print_a_summary_then_the_traceback(monkeypatch, capsys):
    def boom(args):
        raise RuntimeError("something broke")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: _with(parser, "inspect", boom))
    assert cli.main(["inspect", "x"]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "jetlib inspect: internal error: RuntimeError: something broke"
    assert lines[1] == "Traceback (most recent call last):" and lines[-1] == "RuntimeError: something broke"
    assert any('in boom' in line for line in lines)  # the frame that failed is named
    with pytest.raises(RuntimeError, match="something broke"):  # --debug hands it to the debugger
        cli.main(["inspect", "x", "--debug"])


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


@pytest.fixture(scope="module")
def cli_dataset(tmp_path_factory):
    from jetlib.data.ingest import IngestConfig, ingest
    from tests.conftest import write_h5

    d = tmp_path_factory.mktemp("cli")
    write_h5(d / "jets.h5", n=40)
    (d / "notes.txt").write_text("not a dataset")
    return d, ingest(d / "jets.h5", str(d / "store"), cfg=IngestConfig(shard_rows=16, row_group_rows=8))


# Every flag and URI of every step that can be wrong: (argv with D = a scratch folder and DS = a
# dataset, exit code, the line's text). Each must be one line on stderr, with nothing written.
BAD_INPUT = [
    (["simulate", "--n-jets", "0", "--out", "D/s.h5"], 2, "argument --n-jets: must be at least 1, got 0"),
    (["simulate", "--n-jets", "4", "--out", "D/s.h5", "--pt-min", "600", "--pt-max", "500"], 2,
     "need 0 < pt-min < pt-max, got 600.0 and 500.0"),
    (["simulate", "--n-jets", "4", "--out", "D/s.h5", "--pt-min", "nan"], 2, "need 0 < pt-min < pt-max"),
    (["simulate", "--n-jets", "4", "--out", "D/s.h5", "--jet-r", "-1"], 2, "jet radius"),
    (["simulate", "--n-jets", "4", "--out", "D/notes.txt/s.h5"], 2, "--out folder D/notes.txt does not exist"),
    (["ingest", "D/missing.h5", "--store", "D/st"], 2, "D/missing.h5: no such file"),
    (["ingest", "D/notes.txt", "--store", "D/st"], 2, "D/notes.txt: not an HDF5 file"),
    (["ingest", "D/jets.h5", "--store", "s3://h/x"], 2, "invalid bucket name 'h' in s3://h/x"),
    (["ingest", "D/jets.h5", "--store", "s3://Jets_2024/x"], 2, "invalid bucket name 'Jets_2024'"),
    (["ingest", "D/jets.h5", "--store", "gs://bucket/x"], 2, "unsupported store URI 'gs://bucket/x'"),
    (["ingest", "D/jets.h5", "--store", "s3://bucket/x"], 3, "s3:// stores need JETLIB_S3_ENDPOINT"),
    (["ingest", "D/jets.h5", "--store", "D/notes.txt"], 3, "store D/notes.txt is a file, not a folder"),
    (["ingest", "D/jets.h5", "--store", "D/st", "--test-fraction", "0.6", "--val-fraction", "0.5"], 2,
     "test (0.6) + val (0.5) leave no train data"),
    (["ingest", "D/jets.h5", "--store", "D/st", "--fractions", "0.1,2"], 2, "fractions must be in (0, 1]"),
    (["ingest", "D/jets.h5", "--store", "D/st", "--image-size", "64"], 2, "images are 125x125 pixels, expected 64x64"),
    (["ingest", "D/jets.h5", "--store", "D/st", "--memory-mb", "0"], 2, "argument --memory-mb: must be at least 1"),
    (["inspect", "D/nothing"], 2, "no dataset at D/nothing: manifest.json is missing"),
    (["inspect", "s3://h/x"], 2, "invalid bucket name 'h'"),
    (["pretrain", "--data", "D/nothing", "--out", "D/o", "--preset", "tiny"], 2, "no dataset at D/nothing"),
    (["pretrain", "--data", "DS", "--out", "s3://h/x", "--preset", "tiny"], 2, "invalid bucket name 'h'"),
    (["pretrain", "--data", "DS", "--out", "D/notes.txt", "--preset", "tiny"], 3, "is a file, not a folder"),
    (["pretrain", "--data", "DS", "--out", "D/o", "--preset", "laptop"], 2, "argument --preset: invalid choice"),
    (["pretrain", "--data", "DS", "--out", "D/o", "--preset", "tiny", "--device", "tpu"], 2,
     "--device must be auto, cpu, cuda or cuda:N, got 'tpu'"),
    (["pretrain", "--data", "DS", "--out", "D/o", "--preset", "tiny", "--device", "cuda:x"], 2,
     "--device must be auto, cpu, cuda or cuda:N, got 'cuda:x'"),
    (["pretrain", "--data", "DS", "--out", "D/o", "--preset", "tiny", "--lr", "nan"], 2,
     "argument --lr: must be a positive number, got nan"),
    (["pretrain", "--data", "DS", "--out", "D/o", "--preset", "tiny", "--lr", "-1"], 2,
     "argument --lr: must be a positive number, got -1"),
    (["pretrain", "--data", "DS", "--out", "D/o", "--preset", "tiny", "--epochs", "0"], 2,
     "argument --epochs: must be at least 1, got 0"),
    (["pretrain", "--data", "DS", "--out", "D/o", "--preset", "tiny", "--batch-size", "1"], 2,
     "batch_size must be at least 2"),
    (["pretrain", "--data", "DS", "--out", "D/o", "--preset", "tiny", "--set", "foo=1"], 2, "unknown setting 'foo'"),
    (["pretrain", "--data", "DS", "--out", "D/o", "--preset", "tiny", "--set", "lr"], 2,
     "--set expects field=value, got 'lr'"),
    (["pretrain", "--data", "DS", "--out", "D/o", "--preset", "tiny", "--set", "lr=abc"], 2,
     "lr: must be a valid number, unable to parse string as a number, got 'abc'"),
    (["pretrain", "--data", "DS", "--out", "D/o", "--preset", "tiny", "--set", "warmup_epochs=-1"], 2,
     "warmup_epochs: must be greater than or equal to 0, got '-1'"),
    (["pretrain", "--data", "DS", "--out", "D/o", "--preset", "tiny", "--set", "temperature=0"], 2,
     "temperature: must be greater than 0, got '0'"),
    (["pretrain", "--data", "DS", "--out", "D/o", "--preset", "tiny", "--set", "amp=fp8"], 2,
     "amp: must be 'auto', 'bf16' or 'off'"),
    (["pretrain", "--data", "DS", "--out", "D/o", "--preset", "tiny", "--augment", "wild"], 2,
     "argument --augment: invalid choice"),
    (["finetune", "--data", "DS", "--out", "D/f", "--task", "cls", "--mode", "finetune", "--preset", "tiny"], 2,
     "--mode finetune needs --init"),
    (["finetune", "--data", "DS", "--out", "D/f", "--task", "cls", "--mode", "linear", "--init", "D/nothing",
      "--preset", "tiny"], 2, "--init D/nothing: no finished run there (no run.json)"),
    (["finetune", "--data", "DS", "--out", "D/f", "--task", "cls", "--mode", "finetune", "--init", "s3://h/x",
      "--preset", "tiny"], 2, "invalid bucket name 'h'"),
    (["finetune", "--data", "DS", "--out", "D/f", "--task", "cls", "--mode", "finetune", "--init", "s3://bucket/x",
      "--preset", "tiny"], 3, "s3:// stores need JETLIB_S3_ENDPOINT"),
    (["finetune", "--data", "DS", "--out", "D/f", "--task", "mass", "--mode", "scratch"], 2,
     "argument --task: invalid choice"),
    (["finetune", "--data", "DS", "--out", "D/f", "--task", "cls", "--mode", "scratch", "--label-fraction", "0.3",
      "--preset", "tiny"], 2, "label fraction 0.3 is not a subset"),
    (["finetune", "--data", "DS", "--out", "D/f", "--task", "cls", "--mode", "scratch", "--label-fraction", "2",
      "--preset", "tiny"], 2, "label_fraction: must be less than or equal to 1, got 2.0"),
    (["finetune", "--data", "DS", "--out", "D/f", "--task", "cls", "--mode", "scratch", "--lr", "0",
      "--preset", "tiny"], 2, "argument --lr: must be a positive number, got 0"),
    (["baseline", "--data", "DS", "--out", "D/b", "--label-fraction", "0.3", "--preset", "tiny"], 2,
     "label fraction 0.3 is not a subset"),
    (["baseline", "--data", "DS", "--out", "D/b", "--label-fraction", "abc", "--preset", "tiny"], 2,
     "argument --label-fraction: invalid float value: 'abc'"),
    (["baseline", "--data", "DS", "--out", "D/b", "--lr", "-1", "--preset", "tiny"], 2,
     "argument --lr: must be a positive number, got -1"),
    (["baseline", "--data", "DS", "--out", "s3://h/x", "--preset", "tiny"], 2, "invalid bucket name 'h'"),
    (["baseline", "--data", "DS", "--out", "D/b", "--set", "max_lr=-1", "--preset", "tiny"], 2,
     "max_lr: must be greater than 0, got '-1'"),
    (["baseline", "--data", "DS", "--out", "D/b", "--validation", "some", "--preset", "tiny"], 2,
     "argument --validation: invalid choice: 'some'"),
    (["finetune", "--data", "DS", "--out", "D/f", "--task", "cls", "--mode", "scratch", "--set", "patience=0",
      "--preset", "tiny"], 2, "patience: must be greater than or equal to 1, got '0'"),
    (["evaluate", "--data", "DS", "--model", "D/nothing", "--out", "D/r"], 2,
     "--model D/nothing: no finished run there (no run.json)"),
    (["evaluate", "--data", "DS", "--model", "s3://h/x", "--out", "D/r"], 2, "invalid bucket name 'h'"),
    (["evaluate", "--data", "s3://h/x", "--model", "D/nothing", "--out", "D/r"], 2, "invalid bucket name 'h'"),
    (["evaluate", "--data", "DS", "--model", "D/nothing", "--out", "D/r", "--batch-size", "0"], 2,
     "argument --batch-size: must be at least 1, got 0"),
]


@pytest.mark.parametrize("argv,code,line", BAD_INPUT, ids=[" ".join(a[:1] + a[-2:]) for a, _, _ in BAD_INPUT])
def test_every_bad_flag_and_uri_is_one_line(argv, code, line, cli_dataset, tmp_path, monkeypatch, capsys):
    folder, dataset = cli_dataset
    monkeypatch.delenv("JETLIB_S3_ENDPOINT", raising=False)
    for name in ("jets.h5", "notes.txt"):
        (tmp_path / name).symlink_to(folder / name)

    def real(arg):
        return dataset if arg == "DS" else arg.replace("D/", f"{tmp_path}/") if arg.startswith("D/") else arg

    before = sorted(p.name for p in tmp_path.iterdir())
    try:
        got = cli.main([real(a) for a in argv])
    except SystemExit as e:  # argparse
        got = e.code
    err = capsys.readouterr().err.replace(f"{tmp_path}/", "D/")
    assert got == code and err.count("\n") == 1 and line in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing half-written


def test_debug_before_the_step_works_like_after_it(capsys):
    """``jetlib --debug <step>`` used to be reset by the step's own --debug default (argparse copies a
    subparser's defaults over the parent's namespace; fixed with ``default=SUPPRESS``)."""
    for argv in (["--debug", "inspect", "/nonexistent/ds"], ["inspect", "/nonexistent/ds", "--debug"]):
        from jetlib.errors import DataError

        with pytest.raises(DataError, match="no dataset at /nonexistent/ds"):
            cli.main(argv)
    assert cli.main(["inspect", "/nonexistent/ds"]) == 2  # without it: the one line
    assert capsys.readouterr().err.count("\n") == 1


def test_an_error_after_an_unfinished_bar_starts_its_own_line(tmp_path):
    """A bar left mid-line (work stopped by an error) must not swallow the error's start: run as a user would,
    with bars on, and find the error at the start of a line of stderr."""
    code = ("import sys; from jetlib import cli, progress as p; from jetlib.errors import DataError\n"
            "def boom(args):\n"
            "    bar = p.progress(total=10, desc='ingest'); bar.update(3); bar.refresh()\n"
            "    raise DataError('the file is bad')\n"
            "parser = cli.build_parser()\n"
            "parser._subparsers._group_actions[0].choices['inspect'].set_defaults(func=boom)\n"
            "cli.build_parser = lambda: parser\n"
            "sys.exit(cli.main(['inspect', 'x']))\n")
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**__import__("os").environ, "JETLIB_PROGRESS": "1"})
    assert r.returncode == 2
    assert "ingest:" in r.stderr  # the bar was drawn
    assert "\njetlib inspect: error: the file is bad\n" in r.stderr


def test_inspect_verify_checks_every_shard(cli_dataset, capsys):
    _, dataset = cli_dataset
    assert cli.main(["inspect", dataset, "--verify"]) == 0
    out = capsys.readouterr().out
    import json as _json
    from pathlib import Path

    m = _json.loads((Path(dataset) / "manifest.json").read_text())
    n = sum(len(s["shards"]) for s in m["splits"].values())
    assert f"verified  {n} shards" in out and "every sha256, size and row count matches" in out


# --- one set of validators (jetlib.checks) and choices taken from the registries ------------------

def _choices(step: str, flag: str) -> tuple:
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command").choices[step]
    return tuple(next(a for a in sub._actions if flag in a.option_strings).choices)


def test_flag_choices_are_what_the_library_registers():
    from jetlib import augment, baseline, finetune, methods, pretrain, tasks
    from jetlib.data.manifest import VALIDATION

    assert _choices("pretrain", "--method") == tuple(methods.METHODS) and "simclr" in methods.METHODS
    from jetlib import models

    assert _choices("pretrain", "--encoder") == tuple(models.ARCHS) and {"resnet", "vit"} <= set(models.ARCHS)

    assert _choices("finetune", "--task") == tuple(tasks.TASKS) == ("cls", "reg")
    assert _choices("finetune", "--mode") == tuple(finetune.MODES)
    assert _choices("finetune", "--augment") == _choices("pretrain", "--augment") == tuple(augment.PRESETS)
    assert _choices("baseline", "--validation") == _choices("finetune", "--validation") == tuple(VALIDATION)
    for step, module in (("pretrain", pretrain), ("finetune", finetune), ("baseline", baseline)):
        assert _choices(step, "--preset") == ("auto", *module.PRESETS)


def test_a_step_without_torch_does_not_import_it_to_build_the_parser():
    """Choices read from torch-backed registries are lazy: ``jetlib simulate`` and ``--help`` stay light."""
    import subprocess
    import sys

    code = ("import sys; from jetlib.cli import build_parser; build_parser().parse_args(['simulate', '--out', 'x.h5']);"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("value,options,expected", [
    ("3", {"minimum": 1}, 3), (2.0, {}, 2), ("-4", {}, -4),
    ("2.5", {}, "expected a whole number, got '2.5'"), ("2.0", {}, "expected a whole number, got '2.0'"),
    (0.5, {}, "expected a whole number, got 0.5"), (True, {}, "expected a whole number, got True"),
    ("0", {"minimum": 1}, "must be at least 1, got 0"), (None, {}, "expected a whole number, got None"),
])
def test_whole(value, options, expected):
    from jetlib.checks import whole
    from jetlib.errors import ConfigError

    if isinstance(expected, int):
        assert whole(value, **options) == expected
    else:
        with pytest.raises(ConfigError) as e:
            whole(value, "n", **options)
        assert str(e.value) == f"n: {expected}"


@pytest.mark.parametrize("value,options,expected", [
    ("0.5", {"low": 0, "high": 1}, 0.5), (1, {"low": 0, "high": 1}, 1.0),
    ("1", {"low": 0, "high": 1, "high_open": True}, "must be in [0, 1), got 1"),
    ("0", {"low": 0, "low_open": True}, "must be a positive number, got 0"),
    ("nan", {"low": 0, "low_open": True}, "must be a positive number, got nan"),
    ("inf", {"low": 0, "low_open": True}, "must be a positive number, got inf"),
    ("-1", {"low": 0}, "must be at least 0, got -1"),
    ("abc", {}, "expected a number, got 'abc'"), (False, {}, "expected a number, got False"),
])
def test_number(value, options, expected):
    from jetlib.checks import number
    from jetlib.errors import ConfigError

    if isinstance(expected, float):
        assert number(value, **options) == expected
    else:
        with pytest.raises(ConfigError) as e:
            number(value, **options)
        assert str(e.value) == expected


def test_lists_of_values():
    from jetlib.checks import fractions, names, wholes
    from jetlib.errors import ConfigError

    assert fractions("0.1, 0.01,0.1") == (0.01, 0.1)
    assert wholes("2,0, 1") == [2, 0, 1]
    assert names("b,a", ("a", "b")) == ["b", "a"]
    for call, match in ((lambda: fractions("0.1,2"), r"in \(0, 1\]"), (lambda: fractions(""), r"in \(0, 1\]"),
                        (lambda: wholes("1,x"), "comma-separated whole numbers"),
                        (lambda: names("a,c", ("a", "b")), "unknown 'c'; choose from a, b"),
                        (lambda: names(" ,", ("a",)), "none given")):
        with pytest.raises(ConfigError, match=match):
            call()


def _steps():
    parser = cli.build_parser()
    return parser, parser._subparsers._group_actions[0].choices


def test_every_default_is_shown_by_argparse_and_none_is_typed_into_a_help_string():
    """Defaults come from the parser (ArgumentDefaultsHelpFormatter), so help cannot drift from the code."""
    import argparse
    import re

    _, steps = _steps()
    checked = 0
    for step, parser in steps.items():
        text = parser.format_help() if step in ("simulate", "ingest", "inspect", "evaluate", "report") else None
        for action in parser._actions:
            if not action.option_strings or action.help in (None, argparse.SUPPRESS):
                continue
            assert "(default" not in action.help, f"{step} {action.option_strings[0]}: {action.help}"
            if text is not None and action.default not in (None, False, argparse.SUPPRESS) and action.dest != "help":
                shown = cli._HelpFormatter(step)._get_help_string(action) % {**vars(action), "prog": step}
                assert shown.endswith(f"(default: {action.default})")
                flat = [re.sub(r"-\s+", "-", " ".join(t.split())) for t in (shown, text)]  # wrapped at hyphens
                assert flat[0] in flat[1], f"{step} {action.option_strings[0]}"
                checked += 1
    assert checked >= 18  # simulate and ingest defaults, at least


def test_the_main_help_lists_every_exit_code_and_every_environment_variable_jetlib_reads():
    import re
    from pathlib import Path

    from jetlib import errors

    parser, _ = _steps()
    text = parser.format_help()
    codes = {cls.exit_code for cls in vars(errors).values() if isinstance(cls, type) and hasattr(cls, "exit_code")}
    for code in codes | {0, 1, 130}:
        assert re.search(rf"^  {code} +\S", text, re.M), code
    root = Path(cli.__file__).parent
    read = set()  # every such name in the package's source: read through os.environ or declared in a schema
    for path in root.rglob("*.py"):
        read |= set(re.findall(r"\b(JETLIB_[A-Z0-9_]*[A-Z0-9]|AWS_[A-Z_]*[A-Z])\b", path.read_text()))
    assert {"JETLIB_STORE", "JETLIB_S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "JETLIB_TMPDIR"} <= read  # the scan works
    missing = sorted(name for name in read if name not in text)
    assert not missing, f"read from the environment but not in jetlib --help: {missing}"


@pytest.mark.parametrize("step", ["finetune", "baseline"])
def test_a_training_steps_help_says_what_each_preset_sets(step, capsys):
    import importlib

    module = importlib.import_module(f"jetlib.{step}")
    with pytest.raises(SystemExit):
        cli.main([step, "--help"])
    text = capsys.readouterr().out
    for name in module.PRESETS:
        cfg = module.make_config(name)
        line = next(ln for ln in text.splitlines() if ln.startswith(f"  {name} "))
        assert f"epochs={cfg.epochs}" in line and f"batch_size={cfg.batch_size}" in line, line
    tiny = module.make_config("tiny")
    assert f"model.widths={','.join(map(str, tiny.model.widths))}" in text  # --set's own syntax


def test_the_main_help_and_ingest_help_do_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; from jetlib.cli import build_parser; p = build_parser(); p.format_help();"
            "p._subparsers._group_actions[0].choices['ingest'].format_help(); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_ingest_takes_label_fractions_under_the_pipelines_name_and_its_earlier_one():
    parser, _ = _steps()
    new = parser.parse_args(["ingest", "f.h5", "--label-fractions", "0.5,0.1,1"])
    old = parser.parse_args(["ingest", "f.h5", "--fractions", "0.5,0.1,1"])
    assert new.fractions == old.fractions == (0.1, 0.5, 1.0)
    assert parser.parse_args(["ingest", "f.h5"]).fractions == (0.01, 0.1, 0.25, 0.5, 1.0)


def test_every_jetlib_command_the_readme_and_the_pages_show_parses():
    """A renamed or removed flag breaks the documented commands; this catches it (the values are not run)."""
    import re
    import shlex
    from pathlib import Path

    root = Path(cli.__file__).parents[1]
    parser, steps = _steps()
    checked = 0
    for page in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                command = line.split("#")[0].strip()
                command = re.sub(r"^\S+=\$\((.*)\)$", r"\1", command)  # DATA=$(jetlib ingest ...)
                if not command.startswith(("jetlib ", "python -m jetlib ")) or "..." in command:
                    continue
                argv = shlex.split(command.replace("$DATA", "DS").replace("python -m jetlib", "jetlib"))[1:]
                if argv[0] not in steps:
                    continue  # a step documented by the page of the engineer who adds it
                parser.parse_args(argv)  # exits 2 on an unknown flag or a bad value
                checked += 1
    assert checked >= 12
