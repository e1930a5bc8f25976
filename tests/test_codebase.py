"""The codebase as a whole: layers that import only downwards and no import cycles (also none
hidden behind imports inside functions), no private names used across modules, ``ae_ot.ot``
standalone, every module importable in any order, and a CLI that keeps the traceback of a real bug."""

import ast
import os
import random
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "ae_ot"


def package_modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def imported_names(path: Path):
    """(module, imported name) of every ``import`` / ``from ... import`` in the file, at any depth
    (inside functions too: a cycle hidden there is still a cycle)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                yield node.module, alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (importing a.b.c also runs a and a.b)."""
    modules = package_modules()
    graph = {}
    for name, path in modules.items():
        deps = set()
        for module, imported in imported_names(path):
            if not module.startswith("ae_ot"):
                continue
            target = f"{module}.{imported}" if f"{module}.{imported}" in modules else module
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                # a module does not depend on its own parent packages in a cycle-making way
                if prefix in modules and prefix != name and not name.startswith(prefix + "."):
                    deps.add(prefix)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_find_cycle_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles_even_inside_functions():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


#: the layers of the package, lowest first: a module imports only modules of lower layers, or of its
#: own package (a name stands for the module and, for a package, everything in it)
LAYERS = [
    ["ae_ot.checks"],
    ["ae_ot.io"],
    ["ae_ot.ot"],
    ["ae_ot.datasets", "ae_ot.nets", "ae_ot.viz", "ae_ot.flow_matching", "ae_ot.callbacks"],
    ["ae_ot.data", "ae_ot.evaluation"],
    ["ae_ot.generators"],
    ["ae_ot.checkpoint", "ae_ot.lightning_io"],
    ["ae_ot.parsing"],
    ["ae_ot.experiments"],
    ["ae_ot.commands"],
    ["ae_ot.cli"],
    ["ae_ot.__main__"],
]


def layer_unit(module: str) -> tuple[int, str]:
    """(layer, unit) of a module: the entry of :data:`LAYERS` it is or lies in."""
    for level, units in enumerate(LAYERS):
        for unit in units:
            if module == unit or module.startswith(unit + "."):
                return level, unit
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_codebase.py")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``a -> b`` for every import of ``graph`` that does not go to a lower layer or within a unit."""
    found = []
    for name, deps in sorted(graph.items()):
        if name == "ae_ot":
            continue
        level, unit = layer_unit(name)
        for dep in sorted(deps):
            dep_level, dep_unit = layer_unit(dep)
            if dep_unit != unit and dep_level >= level:
                found.append(f"{name} -> {dep}")
    return found


def test_upward_imports_finds_a_planted_one():
    assert upward_imports({"ae_ot.ot.fitting": {"ae_ot.generators.ae_ot", "ae_ot.checks"}}) == \
        ["ae_ot.ot.fitting -> ae_ot.generators.ae_ot"]
    assert upward_imports({"ae_ot.data": {"ae_ot.evaluation.metrics"}}) == ["ae_ot.data -> ae_ot.evaluation.metrics"]
    assert upward_imports({"ae_ot.commands.compare": {"ae_ot.commands.evaluate", "ae_ot.experiments.budget"}}) == []
    assert upward_imports({"ae_ot.evaluation.scoring": {"ae_ot.evaluation.metrics", "ae_ot.ot"}}) == []


def test_every_import_goes_down_the_layers():
    upward = upward_imports(import_graph())
    assert not upward, "imports against the order of LAYERS:\n" + "\n".join(upward)


def test_no_command_imports_another_command():
    """Each command is one module of its own; what two share lives in a layer below."""
    found = [f"{name} -> {dep}" for name, deps in import_graph().items() if name.startswith("ae_ot.commands.")
             for dep in deps if dep.startswith("ae_ot.commands.") and dep != name]
    assert not found, "commands importing one another:\n" + "\n".join(found)


def test_ot_package_is_standalone():
    """``ae_ot.ot`` is usable on any point cloud: it imports no Lightning and nothing of the
    package above it (only the shared checks and atomic writes)."""
    allowed = {"ae_ot.checks", "ae_ot.io", "ae_ot"}
    for name, path in package_modules().items():
        if not name.startswith("ae_ot.ot"):
            continue
        for module, _ in imported_names(path):
            assert not module.startswith(("pytorch_lightning", "lightning")), f"{name} imports {module}"
            if module.startswith("ae_ot") and not module.startswith("ae_ot.ot"):
                assert module in allowed, f"{name} imports {module}"


@pytest.mark.cli
def test_datasets_evaluation_and_toy2d_import_no_lightning():
    """Reading MNIST, scoring samples, ``ae-ot toy2d`` and the options of ``compare``,
    ``latent-compare`` and ``evaluate`` need no Lightning: importing it costs ~3-4 s of every such
    command (the DataModules live in ae_ot.data, the datasets in ae_ot.datasets; the experiments
    load checkpoints, and so the zoo, only when they run)."""
    script = ("import sys, ae_ot.datasets, ae_ot.evaluation, ae_ot.evaluation.latent, ae_ot.commands.toy2d, "
              "ae_ot.commands.compare, ae_ot.commands.latent_compare, ae_ot.commands.evaluate; "
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pytorch_lightning', 'lightning', "
              "'lightning_fabric')))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout[:500]


def test_no_private_names_across_modules():
    offenders = []
    files = [*PACKAGE.rglob("*.py"), *(REPO / "scripts").glob("*.py"), *(REPO / "examples").glob("*.py")]
    for path in files:
        for module, imported in imported_names(path):
            if module.startswith("ae_ot") and imported and imported.startswith("_") and imported != "__version__":
                offenders.append(f"{path.relative_to(REPO)}: from {module} import {imported}")
    assert not offenders, "private names imported across modules:\n" + "\n".join(offenders)


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])   # a second order under -m slow
@pytest.mark.cli
def test_every_module_imports_in_a_fresh_interpreter_in_random_order(seed):
    names = sorted(package_modules())
    random.Random(seed).shuffle(names)
    script = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    proc = subprocess.run([sys.executable, "-c", script, *names], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"order {names}:\n{proc.stderr[-3000:]}"


BUGGY_MODEL = textwrap.dedent('''
    import torch
    from ae_ot.generators import Autoencoder


    class BuggyAutoencoder(Autoencoder):
        """An autoencoder with a bug in its training step: a KeyError from a dict lookup."""

        def training_step(self, batch, batch_idx):
            settings = {"beta": 1.0}
            return settings["alpha"] * super().training_step(batch, batch_idx)
''')


@pytest.mark.cli
def test_cli_keeps_the_traceback_of_a_bug_and_gives_one_line_for_bad_input(tmp_path, cli, monkeypatch):
    """A bug inside training_step (a KeyError) shows its traceback; bad input (UserInputError)
    stays one line; and `fit` does not print Lightning's warning about the `args` parameter."""
    (tmp_path / "buggy_models.py").write_text(BUGGY_MODEL)
    common = ["--config", "models/autoencoder.yaml", "--data.subset=256", "--trainer.max_epochs=1",
              f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false"]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    bug = cli("fit", *common, "--model", "buggy_models.BuggyAutoencoder")
    assert bug.returncode not in (0, 2), bug.stderr[-3000:]
    assert "Traceback" in bug.stderr and "KeyError: 'alpha'" in bug.stderr, bug.stderr[-3000:]
    assert "training_step" in bug.stderr

    bad = cli("fit", *common, "--model.latent_dim=0")
    assert bad.returncode == 2
    assert "latent_dim must be a positive integer" in bad.stderr and "Traceback" not in bad.stderr
    assert "args parameter" not in bad.stderr + bad.stdout


def test_every_picture_in_the_docs_is_under_200_kb():
    from ae_ot.viz import MAX_PICTURE_BYTES

    big = [f"{p.name}: {p.stat().st_size // 1000} KB" for p in sorted((REPO / "docs" / "img").glob("*"))
           if p.stat().st_size > MAX_PICTURE_BYTES]
    assert not big, "pictures over 200 KB (write them with ae_ot.viz.save_figure): " + ", ".join(big)


def test_save_figure_writes_a_small_palette_png(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    from ae_ot.viz import save_figure

    points = np.random.default_rng(0).normal(size=(20000, 2))
    fig, ax = plt.subplots(figsize=(8, 8))
    ax.scatter(points[:, 0], points[:, 1], s=2, c=np.hypot(*points.T), cmap="viridis")
    fig.savefig(tmp_path / "plain.png", dpi=150)
    path = save_figure(fig, tmp_path / "small.png", dpi=150)
    plt.close(fig)
    with Image.open(path) as image:
        assert image.mode == "P" and image.size == Image.open(tmp_path / "plain.png").size
    assert path.stat().st_size < (tmp_path / "plain.png").stat().st_size / 2
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically, nothing left behind


def test_parser_errors_come_down_to_one_line():
    """jsonargparse's Union error trees (as printed by jsonargparse 4.x) reduce to the key path and
    what was wrong; a bad class name lists the zoo."""
    from ae_ot.parsing import concise_parser_message

    bad_int = """Parser key "model":
  Does not validate against any of the Union subtypes
  Subtypes: [<class 'ae_ot.generators.base.GenerativeModel'>, <class 'NoneType'>]
  Errors:
    - Problem with given class_path 'ae_ot.generators.Autoencoder':
        Parser key "latent_dim":
          Expected a <class 'int'>. Got value: abc
    - Expected a <class 'NoneType'>
  Given value type: <class 'jsonargparse._util.NestedArg'>
  Given value: NestedArg(key='latent_dim', val='abc')"""
    assert concise_parser_message(bad_int) == "model.latent_dim: Expected a <class 'int'>. Got value: abc"
    bad_class = """Parser key "model":

  - Expected a path but NoSuchGen either not accessible or invalid
  - Does not validate against any of the Union subtypes
  Subtypes: [<class 'ae_ot.generators.base.GenerativeModel'>, <class 'NoneType'>]
  Errors:
    - Expected a dot import path string: NoSuchGen
    - Expected a <class 'NoneType'>
  Given value type: <class 'str'>
  Given value: NoSuchGen"""
    line = concise_parser_message(bad_class)
    assert line.startswith("model: 'NoSuchGen' is not a class of the zoo") and "WGANGP" in line and "AEOT" in line
    assert concise_parser_message("unrecognized arguments: --trainer.max_epochz=1") == \
        "unrecognized arguments: --trainer.max_epochz=1"


def _command_main(command: str):
    import importlib

    from ae_ot.cli import EXTRA_COMMANDS

    module_name, function = EXTRA_COMMANDS[command].split(":")
    return getattr(importlib.import_module(module_name), function)


def _extra_commands() -> list[str]:
    from ae_ot.cli import EXTRA_COMMANDS

    return sorted(EXTRA_COMMANDS)


@pytest.mark.parametrize("command", _extra_commands())
def test_every_command_reads_back_its_print_config(command, tmp_path, capsys):
    """One CLI style: every command has --print_config, and --config reads that YAML back."""
    import yaml

    main = _command_main(command)
    required = {"evaluate": ["--real", "test"]}.get(command, [])  # a required choice of two options
    with pytest.raises(SystemExit) as info:
        main([*required, "--print_config"])
    assert info.value.code in (0, None)
    printed = capsys.readouterr().out
    options = yaml.safe_load(printed)
    assert isinstance(options, dict) and options, printed
    (tmp_path / "options.yaml").write_text(printed)
    with pytest.raises(SystemExit):
        main(["--config", str(tmp_path / "options.yaml"), "--print_config"])
    assert yaml.safe_load(capsys.readouterr().out) == options


def test_a_bad_command_option_is_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        _command_main("umap")(["--num_samples", "abc"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "num_samples: Expected a <class 'int'>. Got value: abc" in err and len(err.strip().splitlines()) == 2


# ---- the API reference: every public object on a page, with an example ---------------------------
EXAMPLES_TODO = REPO / "tests" / "examples_todo.txt"


def public_definitions() -> list[tuple[str, str, str]]:
    """(module, name, docstring) of every class and function a module defines and lists in its
    ``__all__`` (a name re-exported from elsewhere is checked where it is defined). A command
    module's functions share the module's example: its docstring counts for them."""
    found = []
    for module, path in package_modules().items():
        tree = ast.parse(path.read_text())
        public = next((ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                       and any(getattr(t, "id", None) == "__all__" for t in node.targets)), [])
        shared = ast.get_docstring(tree) or "" if module.startswith("ae_ot.commands.") else ""
        for node in tree.body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name in public:
                found.append((module, node.name, (ast.get_docstring(node) or "") + "\n" + shared))
    return found


def has_examples(docstring: str) -> bool:
    return bool(re.search(r"^\s*Examples\n\s*-{8}", docstring, re.M))


def test_every_public_object_is_on_an_api_page():
    """Each public object's module is in an autosummary of docs/api (or the object has its own
    ``auto*`` directive there)."""
    pages = "\n".join(page.read_text() for page in sorted((REPO / "docs" / "api").glob("*.rst")))
    listed = set(re.findall(r"^\s+(ae_ot[\w.]*)\s*$", pages, re.M)) | set(re.findall(r"::\s*(ae_ot[\w.]*)", pages))
    missing = sorted(f"{module}.{name}" for module, name, _ in public_definitions()
                     if module not in listed and f"{module}.{name}" not in listed)
    assert not missing, f"public objects on no page of docs/api: {missing}"


def test_every_public_object_has_an_example():
    """A numpydoc ``Examples`` section on every public class and function (the doctests run with
    ``pytest --doctest-modules ae_ot``). tests/examples_todo.txt lists the ones still without: it may
    only shrink, so a new public object comes with its example."""
    todo = set(EXAMPLES_TODO.read_text().split())
    without = {f"{module}.{name}" for module, name, doc in public_definitions() if not has_examples(doc)}
    assert not without - todo, f"public objects without an Examples section: {sorted(without - todo)}"
    assert not todo - without, f"remove from {EXAMPLES_TODO.name} (done or gone): {sorted(todo - without)}"
