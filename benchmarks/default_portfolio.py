"""Build the shipped default portfolio: the transfer run's studies plus the hand-set entries.

A portfolio learned only from `benchmarks/portfolio_transfer.py`'s studies can hold only what
they trained, the method defaults. The hand-set portfolio (`search_spaces/portfolio_handset.yaml`)
has configurations no method default has (LoRA on every projection, fitted to r=2, won the quick
start on MRPC), so this script first trains its first `--trials` entries on each of the four
shared tasks (same model, budget, seed and training settings as the transfer run, studies
`<task>-handset-s<seed>` under the same `--work`, resumable), then learns the default from all
of them: `--work`/portfolio-default-s<seed>.yaml. Copy that file over
`search_spaces/portfolio.yaml` to ship it (README, "Portfolio across tasks").

    python benchmarks/default_portfolio.py [--work portfolio_transfer] [--trials 3]

Run it after the transfer run's trials are done (their 8 studies must exist under `--work`).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__:  # imported as benchmarks.default_portfolio (the tests)
    from benchmarks import portfolio_transfer as transfer
else:  # run as a script, its folder first on sys.path
    import portfolio_transfer as transfer

HANDSET = Path(__file__).resolve().parents[1] / "search_spaces" / "portfolio_handset.yaml"


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--trials" not in argv:
        argv += ["--trials", "3"]  # the hand-set file's first three entries
    args = transfer.parse_args(argv)
    studies = [f"{task}-{arm}-s{args.seed}" for arm in ("none", "learned") for task in args.tasks]
    missing = [s for s in studies if not (args.work / "studies" / s).is_dir()]
    if missing:
        print("error: run benchmarks/portfolio_transfer.py first: no study "
              f"{', '.join(missing)} under {args.work / 'studies'}", file=sys.stderr)
        raise SystemExit(2)
    for task in args.tasks:
        study = f"{task}-handset-s{args.seed}"
        transfer.run_search(args, task, study, str(HANDSET), final_seeds=0)
        studies.append(study)
    path = transfer.portfolio_from(args, f"portfolio-default-s{args.seed}.yaml", studies,
                                   "no default portfolio")
    if path is None:
        raise SystemExit(1)
    print(f"default portfolio learned from {len(studies)} studies: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
