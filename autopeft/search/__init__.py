"""One study's life and grids of them: request checks and preparation (searching.py), first trials
(seeding.py, portfolio.py, warm_start.py), sweeps (sweep.py) and budget reuse between them
(reuse.py)."""
