"""The package's layers hold: imports point one way only, and the heavy libraries stay where
they belong (docs/architecture.md). Read from the source with `ast`, so nothing is imported and
an import inside a function counts as much as one at the top."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "autopeft"

# Bottom to top: a module may import its own layer and the layers below it, never above.
LAYERS = [
    {"errors", "_version"},
    {"inputs"},
    {"tasks", "methods", "backbones"},
    {"space"},
    {"study"},
    {"report", "artifacts"},
    {"train"},
    {"engine"},
    {"search"},
    {"results"},
    {"api", "testing"},
    {"cli", "__main__", "__init__"},
]
LEVEL = {part: level for level, parts in enumerate(LAYERS) for part in parts}
ROOT_MODULES = {"__init__", "__main__", "cli", "api", "errors", "testing", "_version"}
# What each part may import of autopeft besides the layers below it (None: no limit).
ONLY = {"report": {"errors", "inputs", "study", "report", "_version"}}
# Third-party packages a part may not import.
FORBIDDEN = {part: {"ray"} for part in LEVEL if part != "engine"}
FORBIDDEN["report"] = {"ray", "torch", "transformers", "peft"}


def part_of(module: str) -> str:
    """'autopeft.search.sweep' → 'search'; 'autopeft.cli' → 'cli'; 'autopeft' → '__init__'."""
    names = module.split(".")
    return names[1] if len(names) > 1 else "__init__"


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    names = list(relative.parts)
    if names[-1] == "__init__" and len(names) > 1:
        names.pop()
    return ".".join(names)


def imports(path: Path) -> set[str]:
    """Absolute names a module imports (`from autopeft import x` as autopeft.x)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            if node.module == "autopeft":
                found |= {f"autopeft.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            raise AssertionError(f"{path}: relative import; the project uses absolute ones")
    return found


def modules() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def violations(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for module, imported in graph.items():
        part = part_of(module)
        for name in sorted(imported):
            top = name.split(".")[0]
            if top in FORBIDDEN.get(part, ()):
                found.append(f"{module} imports {name} (no {top} in {part}/)")
            if top != "autopeft" or name == "autopeft":
                continue
            target = part_of(name) if part_of(name) in LEVEL else "__init__"  # a root attribute
            if part in ONLY and target not in ONLY[part]:
                found.append(f"{module} imports {name} ({part}/ may import only "
                             f"{', '.join(sorted(ONLY[part]))})")
            elif LEVEL[target] > LEVEL[part]:
                found.append(f"{module} imports {name}, a layer above it ({target} over {part})")
    return found


def test_the_package_root_holds_only_the_entry_points():
    root = {p.stem for p in PACKAGE.glob("*.py")}
    assert root == ROOT_MODULES
    every_part = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert every_part <= set(LEVEL), every_part - set(LEVEL)  # a new package gets a layer


def test_no_module_imports_a_layer_above_it_or_a_forbidden_library():
    assert violations(modules()) == []


def test_the_walk_catches_an_upward_or_forbidden_import():
    """The check itself: a broken graph is reported, so the test above can fail."""
    broken = {
        "autopeft.methods.sparse.fisher_mask": {"autopeft.space.budget"},
        "autopeft.artifacts.store": {"autopeft", "autopeft.__version__"},  # the root's
        "autopeft.report.plots": {"torch", "autopeft.search.sweep"},
        "autopeft.search.seeding": {"ray.tune"},
        "autopeft.methods.lora": {"autopeft.engine.searcher"},
    }
    assert violations(broken) == [
        "autopeft.methods.sparse.fisher_mask imports autopeft.space.budget, a layer above it "
        "(space over methods)",
        "autopeft.artifacts.store imports autopeft.__version__, a layer above it (__init__ over "
        "artifacts)",
        "autopeft.report.plots imports autopeft.search.sweep (report/ may import only "
        "_version, errors, inputs, report, study)",
        "autopeft.report.plots imports torch (no torch in report/)",
        "autopeft.search.seeding imports ray.tune (no ray in search/)",
        "autopeft.methods.lora imports autopeft.engine.searcher, a layer above it "
        "(engine over methods)",
    ]


def test_only_the_study_layer_writes_the_study_record():
    writers = sorted(module for module, path in
                     ((module_name(p), p) for p in PACKAGE.rglob("*.py"))
                     if any(call in path.read_text() for call in
                            ("set_user_attr", "set_system_attr", "set_trial_user_attr")))
    assert writers and all(part_of(m) == "study" for m in writers), writers
