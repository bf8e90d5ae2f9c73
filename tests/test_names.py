"""Study and sweep names are names, not paths: nothing is written outside its folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from autopeft import cli
from autopeft.errors import AutoPeftError
from autopeft.inputs.names import MAX_LENGTH, check_name, inside, sanitise
from autopeft.study import default_study_name

BAD = ["", "  ", "../escaped", "a/b", "a\\b", "/abs", "..", ".", ".hidden", "-x", "_x",
       "a\x00b", "a:b", "x" * 300, "a..b", "a b", "a\nb", "a<b", "a>b", 'a"b', "a|b", "a?b",
       "a*b", "a\tb", "caf\u00e9", "C:\\x", "x" * (MAX_LENGTH + 1)]
GOOD = ["a", "mrpc", "mrpc-all-MiniLM-L6-v2-0_5pct", "Run.2", "a_b-c.d", "0", "x" * MAX_LENGTH,
        "sweep-1a2b3c4d", "a.", "compare-a-vs-b"]


@pytest.mark.parametrize("name", BAD)
@pytest.mark.parametrize("flag", ["--study", "--sweep", "--warm-start"])
def test_bad_names_are_refused_naming_the_flag(name, flag):
    with pytest.raises(AutoPeftError) as caught:
        check_name(name, flag)
    message = str(caught.value)
    assert message.startswith(f"{flag} "), message
    assert "letters, digits, '-', '_' and '.'" in message
    assert "\n" not in message and "\x00" not in message  # odd characters are repr'd
    assert len(message) < 400  # a 300-character name is shown cut short


def test_the_message_shows_the_value():
    with pytest.raises(AutoPeftError, match=r"--study '\.\./escaped' .*path separator"):
        check_name("../escaped", "--study")
    with pytest.raises(AutoPeftError, match=r"--sweep 'a\\x00b'"):
        check_name("a\x00b", "--sweep")


@pytest.mark.parametrize("name", GOOD)
def test_good_names_pass_unchanged(name, tmp_path):
    assert check_name(name, "--study") == name
    assert inside(tmp_path, name) == tmp_path / name


@pytest.mark.parametrize("name", ["..", ".", "", "../x", "a/b", "/abs", "a/../../x"])
def test_inside_refuses_what_leaves_the_folder(name, tmp_path):
    with pytest.raises(AutoPeftError, match="outside"):
        inside(tmp_path / "studies", name)


@pytest.mark.parametrize(("text", "expected"), [
    ("mrpc-lora-seed0", "mrpc-lora-seed0"),
    ("mrpc:shuffled-lora-seed0", "mrpc-shuffled-lora-seed0"),
    ("../../etc/lora-seed0", "etc-lora-seed0"),
    ("..", "unnamed"),
    ("a..b", "a.b"),
])
def test_sanitise_makes_a_name(text, expected):
    assert sanitise(text) == expected
    assert check_name(sanitise(text), "name") == sanitise(text)


MODELS = ["sentence-transformers/all-MiniLM-L6-v2", "org/model", "/abs/path/model/", "../m",
          "..", ".", "/", "", "./local", "C:\\models\\bert", "modèle/ünïcode", "-dash",
          "a" * 300, "weird name with spaces", "x/../../y", "\x00nul", "org/model.v2"]
BUDGETS = ["0.5%", "120k", "1.2M", "120000", "0.005", " 1% ", "../1", "1e-3"]
TASKS = ["mrpc", "sst2", "mrpc:shuffled", "stsb", "-odd", "", "a" * 300]


def test_default_study_names_always_pass():
    for task in TASKS:
        for model in MODELS:
            for budget in BUDGETS:
                name = default_study_name(task, model, budget)
                assert check_name(name, "--study") == name, (task, model, budget)


def test_default_study_names_stay_as_they_were():
    """Existing studies resume under their default name: ordinary names are unchanged."""
    assert (default_study_name("mrpc", "sentence-transformers/all-MiniLM-L6-v2", "0.5%")
            == "mrpc-all-MiniLM-L6-v2-0_5pct")
    assert default_study_name("mrpc:shuffled", "/abs/path/model/", "120k") == (
        "mrpc-shuffled-model-120k")
    long = default_study_name("mrpc", "a" * 300, "1%")
    assert len(long) == MAX_LENGTH and long == default_study_name("mrpc", "a" * 300, "1%")
    assert long != default_study_name("mrpc", "a" * 301, "1%")


# --- through the CLI, in process ---------------------------------------------------------------
def run_main(monkeypatch, capsys, *args) -> tuple[int, list[str]]:
    """`autopeft ARGS` through `cli.main` (one line and exit 2 for a user mistake)."""
    monkeypatch.setattr(sys, "argv", ["autopeft", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, [line for line in captured.err.splitlines() if line.strip()]


def snapshot(tmp_path: Path) -> tuple[set, set]:
    return set(tmp_path.rglob("*")), set(tmp_path.parent.iterdir())


def assert_refused(code, lines, *needles):
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: "), lines
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("name", ["../escaped", "../../escaped", "/tmp/abs-escaped", "a/b", ""])
def test_search_refuses_a_path_as_study_and_writes_nothing(monkeypatch, capsys, tmp_path,
                                                           tiny_bert, mrpc_dir, name):
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    code, lines = run_main(monkeypatch, capsys, "search", "--task", "mrpc", "--budget", "1%",
                           "--model", str(tiny_bert), "--data-dir", str(mrpc_dir),
                           "--trials", "1", "--study", name)
    assert_refused(code, lines, "--study", "not a usable name")
    assert snapshot(tmp_path) == before
    if name.startswith("/"):
        assert not Path(name).exists()


def test_search_refuses_a_path_as_warm_start(monkeypatch, capsys, tmp_path, tiny_bert, mrpc_dir):
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    code, lines = run_main(monkeypatch, capsys, "search", "--task", "mrpc", "--budget", "1%",
                           "--model", str(tiny_bert), "--data-dir", str(mrpc_dir),
                           "--warm-start", "../other")
    assert_refused(code, lines, "--warm-start '../other'")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", ["../x", "../../x", "a/b", ".x"])
def test_sweep_refuses_a_path_as_sweep_and_writes_nothing(monkeypatch, capsys, tmp_path,
                                                          tiny_bert, mrpc_dir, name):
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    code, lines = run_main(monkeypatch, capsys, "sweep", "--tasks", "mrpc", "--budgets", "1%",
                           "--models", str(tiny_bert), "--data-dir", str(mrpc_dir.parent),
                           "--trials", "1", "--sweep", name)
    assert_refused(code, lines, f"--sweep '{name}'", "not a usable name")
    assert snapshot(tmp_path) == before


def test_sweep_refuses_a_name_whose_study_names_grow_too_long(monkeypatch, capsys, tmp_path,
                                                              tiny_bert, mrpc_dir):
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    code, lines = run_main(monkeypatch, capsys, "sweep", "--tasks", "mrpc", "--budgets", "1%",
                           "--models", str(tiny_bert), "--data-dir", str(mrpc_dir.parent),
                           "--sweep", "s" * 190)
    assert_refused(code, lines, "--sweep", "its study", "characters long")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("args", [
    ["report", "--study", "../x"],
    ["report", "--study", "ok", "--study", "../x"],
    ["report", "--sweep", "../x"],
    ["export", "exported", "--study", "../x", "--trial", "0"],
    ["export", "exported", "--study", "../x", "--best"],
])
def test_report_and_export_refuse_a_path_as_name(monkeypatch, capsys, tmp_path, args):
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    code, lines = run_main(monkeypatch, capsys, *args)
    flag = "--sweep" if "--sweep" in args else "--study"
    assert_refused(code, lines, f"{flag} '../x'", "not a usable name")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("out", ["..", "somewhere/.."])
def test_export_refuses_an_out_that_names_no_new_folder(monkeypatch, capsys, tmp_path, out):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "somewhere").mkdir()
    before = snapshot(tmp_path)
    code, lines = run_main(monkeypatch, capsys, "export", out, "--study", "s", "--trial", "0")
    assert code == 2 and len(lines) == 1, lines
    assert snapshot(tmp_path) == before


# --- for any text ------------------------------------------------------------------------------
try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # optional (the dev extra has it): the tables above still run
    given = None

if given is None:
    @pytest.mark.skip(reason="hypothesis is not installed")
    def test_any_text_is_refused_or_stays_directly_inside():
        pass
else:
    _PATHISH = st.lists(st.sampled_from([*"ab./\\-_:~ \x00", "..", "\u00e9", "x" * 60]),
                        max_size=12).map("".join)

    @settings(max_examples=500, deadline=None)
    @given(name=st.one_of(st.text(max_size=260), _PATHISH))
    def test_any_text_is_refused_or_stays_directly_inside(tmp_path_factory, name):
        root = tmp_path_factory.getbasetemp() / "property-root"
        try:
            checked = check_name(name, "--study")
        except AutoPeftError as exc:
            assert str(exc).startswith("--study ")
            return
        assert checked == name
        assert (root / checked).resolve().parent == root.resolve()
        assert inside(root, checked) == root / checked
