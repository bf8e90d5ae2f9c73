"""The cluster storage for real: `--storage postgresql://...` against a PostgreSQL server.

A search, a killed search resumed, and two searches appending to one study at once must lose
and duplicate nothing; the report and optuna-dashboard read the study from the database. Each
test gets a database of its own. The server comes from `AUTOPEFT_TEST_POSTGRES` (`.ci/run`
starts one with `scripts/postgres.sh`); outside CI the tests skip without it, under CI they fail.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import optuna
import pandas as pd
import pytest
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from autopeft import study as records
from tests.helpers import Search, assert_searches_overlapped, run_cli, tiny_search_args

URL_ENV = "AUTOPEFT_TEST_POSTGRES"


@pytest.fixture()
def postgres_url() -> Iterator[str]:
    """The URL of a fresh, empty database on the test server, dropped afterwards."""
    server = os.environ.get(URL_ENV)
    if not server:
        why = (f"no PostgreSQL server: set {URL_ENV} to its URL "
               "(bash scripts/postgres.sh start DIR starts one and prints it)")
        if os.environ.get("CI"):
            pytest.fail(f"CI must test the RDB storage, but {why}")
        pytest.skip(why)
    name = f"autopeft_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    url = sqlalchemy.engine.make_url(server).set(database=name).render_as_string(
        hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def _trials(url: str, study: str) -> list[FrozenTrial]:
    """The study's trials, read without changing anything (no stale-trial marking)."""
    storage = optuna.storages.RDBStorage(url)
    try:
        if study not in {s.study_name for s in optuna.get_all_study_summaries(storage)}:
            return []
        return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    finally:
        storage.remove_session()
        storage.engine.dispose()


def _numbers(trials: list[FrozenTrial], state: TrialState) -> set[int]:
    return {t.number for t in trials if t.state == state}


def _assert_whole_study(work: Path, url: str, study: str) -> list[FrozenTrial]:
    """Nothing left running; trial numbers 0..n-1, each once; every COMPLETE trial has its
    artifact under the study directory (the database holds the record, the disk the weights)."""
    trials = _trials(url, study)
    assert [t.number for t in trials] == list(range(len(trials)))
    assert not _numbers(trials, TrialState.RUNNING) | _numbers(trials, TrialState.WAITING)
    folder = work / "studies" / study / "artifacts"
    for trial in trials:
        if trial.state == TrialState.COMPLETE:
            assert trial.user_attrs[records.ATTR_ARTIFACT] == f"artifacts/trial-{trial.number:04d}"
            assert (folder / f"trial-{trial.number:04d}" / "autopeft_config.json").is_file()
    assert not (work / "studies" / study / "optuna.journal").exists()  # nothing went to a file
    return trials


def test_search_killed_and_resumed_then_reported_from_postgres(tmp_path, tiny_bert, mrpc_dir,
                                                               postgres_url):
    asked = 3
    args = tiny_search_args(tiny_bert, mrpc_dir, "pg", asked, "--storage", postgres_url)

    def running_after_one() -> bool:
        trials = _trials(postgres_url, "pg")
        return bool(_numbers(trials, TrialState.COMPLETE) and _numbers(trials, TrialState.RUNNING))

    first = Search(args, tmp_path, "first")
    first.wait_until(running_after_one)
    first.proc.kill()  # SIGKILL: nothing marks the running trial; the next search must
    first.wait()
    trials = _trials(postgres_url, "pg")
    stale, kept = _numbers(trials, TrialState.RUNNING), _numbers(trials, TrialState.COMPLETE)
    assert stale and kept

    resumed = Search(args, tmp_path, "resumed")
    assert resumed.wait() == 0, resumed.stderr[-3000:]
    trials = _assert_whole_study(tmp_path, postgres_url, "pg")
    complete = _numbers(trials, TrialState.COMPLETE)
    assert kept <= complete and len(complete) == asked
    assert all(trials[n].state == TrialState.FAIL for n in stale)
    assert (f"study 'pg' holds {len(kept)} trained trials → this run adds up to "
            f"{asked - len(kept)} (--trials {asked})") in resumed.stderr
    study = optuna.load_study(study_name="pg", storage=postgres_url)
    front = {t.number for t in records.feasible_front(study)}
    dev = records.dev_scores(study)  # JSON study attributes round-trip the RDB
    assert front and set(dev) == front and all("score" in m for m in dev.values())

    # the report, rebuilt elsewhere from the database alone, shows every trial once
    rebuilt = run_cli("report", "--study", "pg", "--storage", postgres_url,
                      "--out", str(tmp_path / "rebuilt"), cwd=tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    table = pd.read_csv(tmp_path / "rebuilt" / "trials.csv")
    assert table.trial.is_unique and set(table.trial) == {t.number for t in trials}
    assert set(table[table.state == "COMPLETE"].trial) == complete
    pareto = pd.read_csv(tmp_path / "rebuilt" / "pareto.csv").set_index("trial")
    assert set(pareto.index) == front
    assert all(pareto.loc[n, "dev_score"] == pytest.approx(dev[n]["score"]) for n in front)

    # optuna-dashboard serves the same study and trials from the same database
    from optuna_dashboard import wsgi

    app = wsgi(optuna.storages.RDBStorage(postgres_url))
    studies = _get(app, "/api/studies")["study_summaries"]
    (summary,) = [s for s in studies if s["study_name"] == "pg"]
    shown = _get(app, f"/api/studies/{summary['study_id']}")["trials"]
    assert sorted(t["number"] for t in shown) == [t.number for t in trials]
    assert {t["number"] for t in shown if t["state"] == "Complete"} == complete


def test_two_searches_append_to_one_postgres_study_at_once(tmp_path, tiny_bert, mrpc_dir,
                                                          postgres_url):
    asked = 3
    args = tiny_search_args(tiny_bert, mrpc_dir, "shared", asked, "--storage", postgres_url)
    searches = [Search(args, tmp_path, f"search{i}") for i in range(2)]
    for search in searches:
        assert search.wait() == 0, search.stderr[-3000:]
    trials = _assert_whole_study(tmp_path, postgres_url, "shared")
    assert len(_numbers(trials, TrialState.COMPLETE)) == 2 * asked == len(trials)
    assert_searches_overlapped(trials, searches)


def _get(app, path: str) -> dict:
    """GET `path` from a WSGI app, without a server: its JSON body."""
    environ: dict = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO()}
    setup_testing_defaults(environ)
    status: list[str] = []
    body = b"".join(app(environ, lambda code, headers, exc_info=None: status.append(code)))
    assert status and status[0].startswith("200"), (path, status, body[:500])
    return json.loads(body)


def test_a_search_that_loses_the_table_creation_race_opens_the_storage(monkeypatch):
    """Two searches opening a new database at once: the one whose CREATE TABLE collides opens
    it on a retry; any other database error is one line, at once."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    from autopeft.study import storage as records  # where the storage is opened

    calls = []

    def storage(url):
        calls.append(url)
        if len(calls) == 1:
            raise IntegrityError("CREATE TABLE alembic_version", {},
                                 Exception('relation "alembic_version" already exists'))
        return "opened"

    monkeypatch.setattr(records, "RDBStorage", storage)
    monkeypatch.setattr(records.time, "sleep", lambda seconds: None)
    assert records.make_storage("postgresql://db/x", Path("unused")) == "opened"
    assert len(calls) == 2

    def refused(url):
        calls.append(url)
        raise OperationalError("connect", {}, Exception("connection refused"))

    calls.clear()
    monkeypatch.setattr(records, "RDBStorage", refused)
    with pytest.raises(records.AutoPeftError, match="cannot open storage 'postgresql://db/x'"):
        records.make_storage("postgresql://db/x", Path("unused"))
    assert len(calls) == 1
