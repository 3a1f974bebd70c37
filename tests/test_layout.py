"""The package's layout: rooms by job, each importing only the rooms below it.

Read from the source (every ``import``, lazy ones inside functions included), so a violation
fails here before anyone notices it in a slow import.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "capslib"

# Lowest first: a module may import its own room and the rooms before it, never one after it.
ROOMS = ("core", "data", "evaluation", "analysis", "training", "experiments", "plots", "publish", "commands")
# python -m capslib.<name>
COMMANDS = ("train", "evaluate", "ablation", "robustness", "multimnist_study", "routing_study", "site")
# A command line may use any room (the evaluation command draws a confusion matrix): the top-level
# command modules only hand over to their room's ``cli`` module, which counts as a command.
MAX_LINES = 450


def room(module: str) -> str:
    """The room of a dotted module name below ``capslib`` ("training.loop" -> "training")."""
    parts = module.split(".")
    if parts[-1] == "cli":
        return "commands"
    if len(parts) > 1 or (PACKAGE / parts[0]).is_dir():
        return parts[0]
    return "commands" if parts[0] in COMMANDS else "core"


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts) or "__init__"] = path
    return found


def imported(module: str, path: Path) -> set[str]:
    """The capslib modules ``module`` imports anywhere in its file, as dotted names below capslib."""
    package = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")
    if module == "__init__":
        package = []
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = [*base, *(node.module.split(".") if node.module else [])]
            elif node.module and node.module.split(".")[0] == "capslib":
                target = node.module.split(".")[1:]
            else:
                continue
            if target:
                names.add(".".join(target))
            else:  # from . import x
                names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".", 1)[1] for a in node.names if a.name.startswith("capslib."))
    return names


def test_rooms_are_the_known_ones_each_with_a_one_line_docstring():
    rooms = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert rooms == sorted(r for r in ROOMS if r not in ("core", "commands"))
    for name in rooms:
        doc = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text()))
        assert doc and "\n" not in doc.strip(), f"capslib/{name}/__init__.py needs a one-line docstring"


def test_no_module_imports_a_room_above_its_own():
    wrong = []
    for module, path in modules().items():
        if module == "__init__":  # the package's front door re-exports the core and shape tracing
            continue
        mine = ROOMS.index(room(module))
        for target in imported(module, path):
            if ROOMS.index(room(target)) > mine:
                wrong.append(f"capslib.{module} imports capslib.{target} ({room(target)} is above {room(module)})")
    assert not wrong, "\n".join(wrong)


def test_the_package_front_door_imports_only_the_core_and_tracing():
    allowed = {"core", "analysis"}  # analysis.tracing: trace_shapes and ShapeTable are public names
    targets = imported("__init__", PACKAGE / "__init__.py")
    assert {room(t) for t in targets} <= allowed, targets


def test_no_module_is_longer_than_a_screenful_or_two():
    long = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_command_modules_are_thin():
    for name in COMMANDS:
        lines = (PACKAGE / f"{name}.py").read_text().splitlines()
        assert len(lines) <= 12, f"capslib/{name}.py should only hand over to its room ({len(lines)} lines)"


@pytest.mark.parametrize(
    "statement, absent",
    [
        ("import capslib", ("matplotlib", "ipywidgets", "torchvision", "capslib.training", "capslib.data")),
        ("import capslib.plots, capslib.plots.widgets", ("capslib.training", "capslib.experiments.ablation")),
        ("import capslib.evaluation", ("capslib.training", "matplotlib")),
        ("import capslib.data", ("capslib.training", "matplotlib")),
    ],
)
def test_importing_a_room_does_not_load_what_it_does_not_need(statement, absent):
    code = f"import sys; {statement}; print(sorted(m for m in sys.modules if m.startswith({absent!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]", f"{statement} loaded {out.stdout.strip()}"


def test_the_package_map_names_every_room_and_top_level_module():
    doc = ast.get_docstring(ast.parse((PACKAGE / "__init__.py").read_text()))
    names = [p.name + "/" for p in PACKAGE.iterdir() if (p / "__init__.py").exists()]
    names += [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    missing = [name for name in names if name not in doc]
    assert not missing, f"capslib/__init__.py's map leaves out {missing}"
