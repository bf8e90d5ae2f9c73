"""`autopeft portfolio build`: parse, call `portfolio_build`, print. Registered by `cli.py`,
whose `main` turns an AutoPeftError into one line and exit status 2."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from autopeft.options import check_not_blank
from autopeft.portfolio_build import DEFAULT_SIZE, build_portfolio
from autopeft.space import FRACTION

portfolio_app = typer.Typer(
    no_args_is_help=True,
    help="Portfolios: the first configurations a search tries (--portfolio FILE).")
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


@portfolio_app.command()
def build(
    out_file: Annotated[str, typer.Option(
        "--out", help="YAML file to write (must not exist yet)")],
    study: Annotated[list[str] | None, typer.Option(
        help="a finished study to learn from (repeatable; studies of at least 2 tasks)")
    ] = None,
    sweep: Annotated[list[str] | None, typer.Option(
        help="a sweep whose studies to learn from (repeatable)")] = None,
    size: Annotated[int, typer.Option(help="entries of the portfolio (at most)")] = DEFAULT_SIZE,
    studies_dir: str = "studies",
    storage: Annotated[str | None, typer.Option(help="journal file or RDB URL")] = None,
) -> None:
    """Learn a portfolio from finished studies of several tasks (see README: Portfolio)."""
    check_not_blank({"--out": out_file, "--storage": storage, "--studies-dir": studies_dir})
    built = build_portfolio(out_file, study, sweep, size, studies_dir, storage)
    for note in built.notes:
        err.print(f"[yellow]{escape(note)}[/yellow]", highlight=False)
    provenance = built.document["provenance"]
    tasks = provenance["tasks"]
    table = Table("#", "method", "size", "learning rate", "coverage", *tasks,
                  title="scores between chance (0) and each task's best (1); * imputed")
    for number, entry in enumerate(built.document["entries"], start=1):
        size_text = (f"{entry[FRACTION]:.3g} of budget" if FRACTION in entry else "fixed")
        cells = [f"{entry['scores'][t]:.3f}{'*' if t in entry['imputed'] else ''}"
                 for t in tasks]
        table.add_row(str(number), entry["method"], size_text,
                      f"{entry.get('learning_rate', float('nan')):.2g}",
                      f"{entry['coverage']:.3f}", *cells)
    out.print(table)
    out.print(f"portfolio of {len(built.document['entries'])} entries learned from "
              f"{len(provenance['studies'])} studies of {len(tasks)} tasks written to "
              f"{built.path}; use it: autopeft search --portfolio {built.path} ...",
              highlight=False, markup=False)
