"""Sweep scaling: trial throughput and worker utilisation of `autopeft sweep` on 1 and 2 nodes.

The same sweep (tiny random BERT; MRPC and its shuffled-label control `mrpc:shuffled`; budgets
0.5% and 2%; `--trials` per study; short LoRA/BitFit trials on a slice of MRPC) runs twice
through the real CLI, `autopeft sweep --address ... --concurrency <slots>`, against a Ray
cluster started here with the real `ray start` on loopback: once with one node (the head), once
with a head and a second node. Each node offers `--cpus-per-node` CPUs and each trial takes one
(what `--address` gives a trial), so slots = nodes x CPUs per node.

Printed per cluster:
  trials       trained trials (over-budget proposals never train and are not counted)
  wall s       the whole `autopeft sweep` command: driver start, Ray connect, trials, report
  phase s      the trial phase: first trial start to last trial end (Optuna's datetimes)
  trials/h     trials / phase, per hour; the 2-node / 1-node ratio is printed beside it
  util         worker utilisation = sum of trial_seconds / (phase s x slots); target >= 0.9
  per node     how many trials ran on each node (the trial's `worker.node`)

Budget reuse between the two budgets is off (`--no-reuse`), so both clusters train the same
number of trials. Each cluster is started in a private `--temp-dir` and stopped by signalling
the `ray start --block` processes started here (never `ray stop`, which would stop every Ray
instance of this user on the machine), also on error or Ctrl+C.

This machine may have only 2 cores: the default of 1 CPU per node keeps the 1-node baseline
(1 slot) and the 2-node run (2 slots) comparable; on a bigger machine raise --cpus-per-node.

    python benchmarks/sweep_scaling.py [--trials N] [--cpus-per-node C] [--max-train-samples S]
        [--epochs E] [--nodes 1 2]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# The clusters started here use token authentication with a token of their own, passed to every
# process (nodes, their workers, the sweep's driver, this one) through the environment. Without
# RAY_AUTH_MODE, `ray start` enables it whenever ~/.ray/auth_token exists, while a driver given
# an explicit --address never does, and then cannot connect.
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)

import optuna  # noqa: E402
from optuna.storages import JournalStorage  # noqa: E402
from optuna.storages.journal import JournalFileBackend  # noqa: E402
from optuna.trial import FrozenTrial  # noqa: E402

from autopeft import study as records  # noqa: E402
from autopeft.search.reuse import ATTR_REUSED  # noqa: E402
from autopeft.search.sweep import read_manifest  # noqa: E402
from autopeft.testing import build_tiny_bert  # noqa: E402

GLUE = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"
SPACE_FILE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "small_space.yaml"
TARGET_UTILISATION = 0.9
SWEEP_TIMEOUT_S = 1800
NODE_START_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """A Ray cluster of `nodes` nodes on this machine, each a `ray start --block` process.

    Each `ray start --block` leads its own process group and stops its node's processes when
    it gets SIGTERM (and, through Ray's fate sharing, when it dies); whatever is left in its
    group is then killed. Only processes started here are signalled.
    """

    def __init__(self, nodes: int, cpus: int, work: Path):
        self.nodes, self.cpus = nodes, cpus
        # short: Ray's socket paths under the temp dir have a length limit
        self.temp = tempfile.mkdtemp(prefix="rss", dir="/tmp")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.logs = work
        self.procs: list[subprocess.Popen] = []
        self.node_names: dict[str, str] = {}  # Ray node id -> "head" / "node2" ...

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "RAY_TMPDIR": self.temp}

    def _start_node(self, args: list[str], name: str) -> None:
        command = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block",
                   "--num-cpus", str(self.cpus), "--num-gpus", "0", "--temp-dir", self.temp,
                   "--disable-usage-stats", "--dashboard-agent-listen-port", str(free_port()),
                   "--metrics-export-port", str(free_port()), *args]
        with (self.logs / f"ray-{name}.log").open("w") as log:
            self.procs.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                               env=self.env, start_new_session=True))

    def __enter__(self) -> LocalCluster:
        try:
            self._start_node(["--head", "--port", str(self.port), "--include-dashboard", "false"],
                             "head")
            self._wait_for_nodes(1)
            for n in range(2, self.nodes + 1):
                self._start_node(["--address", self.address], f"node{n}")
            self._wait_for_nodes(self.nodes)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _wait_for_nodes(self, count: int) -> None:
        """Until `count` nodes are alive; records which node id is which."""
        import ray

        deadline = time.monotonic() + NODE_START_TIMEOUT_S
        while True:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"`{' '.join(proc.args)}` exited ({proc.returncode}):\n"
                                       + self._log_tails())
            if time.monotonic() > deadline:
                raise RuntimeError(f"fewer than {count} Ray nodes after "
                                   f"{NODE_START_TIMEOUT_S}s:\n" + self._log_tails())
            alive = []
            if _accepts(self.port):  # else the head is still starting
                os.environ["RAY_TMPDIR"] = self.temp
                ray.init(address=self.address, log_to_driver=False, logging_level="ERROR")
                try:
                    alive = [n for n in ray.nodes() if n["Alive"]]
                finally:
                    ray.shutdown()
            if len(alive) >= count:
                for node in alive:
                    head = "node:__internal_head__" in node["Resources"]
                    self.node_names.setdefault(
                        node["NodeID"], "head" if head else f"node{len(self.node_names) + 1}")
                return
            time.sleep(1)

    def _log_tails(self) -> str:
        return "\n".join(f"{p.name}: ...{p.read_text()[-1500:]}"
                         for p in sorted(self.logs.glob("ray-*.log")))

    def stop(self) -> None:
        """SIGTERM each `ray start` (workers first), then SIGKILL what is left of its group."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # the group is this node's processes
        self.procs.clear()
        shutil.rmtree(self.temp, ignore_errors=True)


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def run_sweep(cluster: LocalCluster, model: Path, space: Path, work: Path, name: str,
              args: argparse.Namespace) -> float:
    """`autopeft sweep` against `cluster`; its wall seconds."""
    slots = cluster.nodes * cluster.cpus
    command = [sys.executable, "-m", "autopeft", "sweep", "--tasks", "mrpc,mrpc:shuffled",
               "--budgets", "0.5%,2%", "--models", str(model), "--trials", str(args.trials),
               "--data-dir", str(args.data_dir), "--space", str(space), "--sweep", name,
               "--address", cluster.address, "--concurrency", str(slots),
               "--gpus-per-trial", "0", "--max-train-samples", str(args.max_train_samples),
               "--batch-size", "16", "--epochs", str(args.epochs), "--final-seeds", "0",
               "--no-reuse", "--studies-dir", str(work / "studies"),
               "--reports-dir", str(work / "reports")]
    out, err = work / f"{name}.out", work / f"{name}.err"
    started = time.perf_counter()
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(command, cwd=work, stdout=stdout, stderr=stderr,
                                env={**cluster.env, "COLUMNS": "200"})
        try:
            code = proc.wait(SWEEP_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    wall = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"autopeft sweep exited {code}:\n{err.read_text()[-3000:]}")
    return wall


def trained_trials(work: Path, name: str) -> list[FrozenTrial]:
    """Every trial the sweep trained, over all its studies (shared copies excluded)."""
    studies_dir = work / "studies"
    trials = []
    for entry in read_manifest(name, str(studies_dir))["studies"]:
        journal = studies_dir / entry["study"] / "optuna.journal"
        storage = JournalStorage(JournalFileBackend(str(journal)))
        study = optuna.load_study(study_name=entry["study"], storage=storage)
        trials += [t for t in study.get_trials(deepcopy=False)
                   if records.ATTR_WORKER in t.user_attrs and ATTR_REUSED not in t.user_attrs
                   and t.datetime_complete is not None]
    return trials


def measure(nodes: int, model: Path, space: Path, root: Path, args: argparse.Namespace) -> dict:
    work = root / f"{nodes}-node"
    work.mkdir()
    name = f"scaling-{nodes}n"
    with LocalCluster(nodes, args.cpus_per_node, work) as cluster:
        wall = run_sweep(cluster, model, space, work, name, args)
        names = dict(cluster.node_names)
    trials = trained_trials(work, name)
    start = min(t.datetime_start for t in trials)
    end = max(t.datetime_complete for t in trials)
    phase = (end - start).total_seconds()
    slots = nodes * args.cpus_per_node
    busy = sum(t.user_attrs.get(records.ATTR_TRIAL_SECONDS, 0.0) for t in trials)
    per_node = Counter(names.get(t.user_attrs[records.ATTR_WORKER]["node"], "?") for t in trials)
    return {"nodes": nodes, "slots": slots, "trials": len(trials), "wall": wall, "phase": phase,
            "per_hour": 3600 * len(trials) / phase, "per_hour_wall": 3600 * len(trials) / wall,
            "util": busy / (phase * slots), "trial_s": busy / len(trials),
            "per_node": ", ".join(f"{k} {v}" for k, v in sorted(per_node.items()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6, help="per study (4 studies)")
    parser.add_argument("--cpus-per-node", type=int, default=1)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--max-train-samples", type=int, default=2000)
    # 3 epochs: ~10 s trials here; at ~3 s (1 epoch) a second node's worker start-up (~5 s,
    # once per sweep) and per-trial bookkeeping weigh visibly (measured util 0.83 on 2 nodes)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=GLUE, help="GLUE root (MRPC/ in it)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="an empty directory to work in and keep (studies, logs, reports)")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = (args.keep or Path(tmp)).resolve()
        model = build_tiny_bert(root / "tiny-bert")
        space = root / "space.yaml"
        space.write_text(SPACE_FILE.read_text(encoding="utf-8"), encoding="utf-8")
        results = []
        for nodes in args.nodes:
            results.append(measure(nodes, model, space, root, args))
            r = results[-1]
            print(f"{nodes} node(s): {r['trials']} trials in {r['wall']:.0f}s", flush=True)

    base = results[0]
    print(f"\nsweep scaling (tiny BERT; mrpc + mrpc:shuffled x 0.5%, 2%; {args.trials} trials "
          f"per study; {args.max_train_samples} train samples, {args.epochs} epoch(s); "
          f"{args.cpus_per_node} CPU per node, 1 CPU per trial)")
    print(f"{'nodes':>5} {'slots':>5} {'trials':>6} {'wall s':>7} {'phase s':>7} "
          f"{'trial s':>7} {'trials/h':>8} {'x base':>6} {'trials/h wall':>13} {'x base':>6} "
          f"{'util':>5}  per node")
    for r in results:
        print(f"{r['nodes']:>5} {r['slots']:>5} {r['trials']:>6} {r['wall']:>7.1f} "
              f"{r['phase']:>7.1f} {r['trial_s']:>7.2f} {r['per_hour']:>8.0f} "
              f"{r['per_hour'] / base['per_hour']:>6.2f} {r['per_hour_wall']:>13.0f} "
              f"{r['per_hour_wall'] / base['per_hour_wall']:>6.2f} {r['util']:>5.2f}  "
              f"{r['per_node']}")
    print(f"trials/h = trials / trial phase (first trial start to last trial end); 'trials/h "
          f"wall' uses the whole command. util = summed trial_seconds / (phase x slots); target "
          f">= {TARGET_UTILISATION}. Nodes run on one machine with {os.cpu_count()} cores, "
          f"{args.cpus_per_node} CPU each, so the 1-node baseline and the 2-node run get one "
          "core per slot (other work on the machine competes for the same cores).")


if __name__ == "__main__":
    main()
