"""The package's import structure: no import cycles, and lower layers never import higher ones.

The modules are read with `ast` (nothing is imported, so no torch is needed). Every import counts:
module level, inside functions, `from accelyolo.x import y`, `import accelyolo.x` and relative
imports. An import of a package (`accelyolo.data`) is an import of its `__init__`; `from pkg import
name` is an import of the submodule `pkg.name` when there is one. Imports under `if TYPE_CHECKING:`
never run, so they count for the layers but not for cycles.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "accelyolo"

# The layers, lowest first. A module may import modules of its own layer and of the layers below, never
# of a layer above. A module belongs to the entry with the longest matching name (`accelyolo.data`
# holds `accelyolo.data.cache`). Slot a new module or package in where it belongs; a module that no
# entry covers fails `test_every_module_has_a_layer`. Entries may name modules that do not exist yet.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # Each layer is a sub-package (the folder shows the architecture); the few exceptions name a module.
    ("foundation", ("accelyolo.core",)),
    ("data", ("accelyolo.data",)),
    ("measures", ("accelyolo.evaluation",)),
    ("models", ("accelyolo.models",)),
    ("losses", ("accelyolo.losses",)),
    ("model families", ("accelyolo.families",)),
    # checkpoints (load_checkpoint builds the saved model through the family registry), the Hub, and other
    # tools' weights read without running their code
    ("weights in and out", ("accelyolo.weights",)),
    ("training loop", ("accelyolo.training",)),
    # the features that combine with any experiment
    ("tasks", ("accelyolo.tasks",)),
    # fit() combines the experiment classes a configuration asks for, so it sits above all of them; the
    # top-level scripts are the commands' forms for `accelerate launch`
    ("commands", ("accelyolo.commands", "accelyolo.train", "accelyolo.validation", "accelyolo.evolve")),
)

# The rule the layers exist for, stated on its own so that a reordered table cannot drop it.
LOW_LEVEL = ("accelyolo.data", "accelyolo.models", "accelyolo.losses", "accelyolo.evaluation.metrics")
LOW_LEVEL += ("accelyolo.core.boxes", "accelyolo.core.fileio")
HIGH_LEVEL = ("accelyolo.training", "accelyolo.tasks", "accelyolo.commands", "accelyolo.train", "accelyolo.validation")
HIGH_LEVEL += ("accelyolo.training.callbacks", "accelyolo.commands.fit", "accelyolo.commands.evolve")

# The package root's lazy imports of the top-level functions (and `python -m accelyolo`) are allowed:
# their imports are not edges, and importing `accelyolo` itself (e.g. `__version__`) is free.
EXEMPT = ("accelyolo", "accelyolo.__main__")

# Known module cycles that are being removed elsewhere; each entry is one pair of modules.
KNOWN_CYCLES: tuple[frozenset[str], ...] = ()  # none: add a pair only with a comment saying when it goes


@dataclass(frozen=True)
class Edge:
    """One import statement: `source` imports `target` at `line`."""

    source: str
    target: str
    line: int
    type_only: bool = False


def module_name(path: Path, package_dir: Path = PACKAGE_DIR) -> str:
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes inside `if TYPE_CHECKING:` blocks."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else ""
            if name == "TYPE_CHECKING":
                inside.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    return inside


def module_imports(source: str, name: str, is_package: bool, modules: set[str]) -> list[Edge]:
    """The intra-package imports of one module (`name`), given the names of all modules."""
    tree = ast.parse(source)
    type_only = _type_checking_nodes(tree)
    edges = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, one level up per extra dot
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.append(submodule if submodule in modules else base)
        for target in targets:
            if target == "accelyolo" or target.startswith("accelyolo."):
                edges.append(Edge(name, target, node.lineno, id(node) in type_only))
    return edges


def import_graph(package_dir: Path = PACKAGE_DIR) -> dict[str, list[Edge]]:
    """module name -> its imports of other modules of the package (exempt modules have none)."""
    files = {module_name(p, package_dir): p for p in sorted(package_dir.rglob("*.py"))}
    modules = set(files)
    graph = {}
    for name, path in files.items():
        edges = module_imports(path.read_text(encoding="utf-8"), name, path.name == "__init__.py", modules)
        graph[name] = [] if name in EXEMPT else [e for e in edges if e.target not in EXEMPT and e.target != name]
    return graph


def find_cycles(graph: dict[str, list[Edge]], allowed: tuple[frozenset[str], ...] = ()) -> list[list[Edge]]:
    """One cycle (as its edges) per group of modules that import each other, ignoring `type_only`
    edges and the edges between the two modules of an `allowed` pair."""
    adjacency: dict[str, list[Edge]] = {name: [] for name in graph}
    for edges in graph.values():
        for e in edges:
            if not e.type_only and frozenset({e.source, e.target}) not in allowed:
                adjacency[e.source].append(e)
                adjacency.setdefault(e.target, [])
    # Tarjan's strongly connected components, iteratively (no recursion limit to worry about).
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    for root in sorted(adjacency):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            edges = adjacency[node]
            if i < len(edges):
                work.append((node, i + 1))
                nxt = edges[i].target
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1 or any(e.target == node for e in edges):
                    components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return [_cycle_in(component, adjacency) for component in components]


def _cycle_in(component: set[str], adjacency: dict[str, list[Edge]]) -> list[Edge]:
    """A path of edges that starts and ends at the same module, inside one strongly connected component."""
    start = min(component)
    parents: dict[str, Edge | None] = {start: None}
    queue = [start]
    while queue:  # breadth-first, so the reported cycle is a shortest one through `start`
        node = queue.pop(0)
        for e in adjacency[node]:
            if e.target == start:
                path = [e]
                while parents[path[0].source] is not None:
                    path.insert(0, parents[path[0].source])
                return path
            if e.target in component and e.target not in parents:
                parents[e.target] = e
                queue.append(e.target)
    raise AssertionError(f"no cycle through {start}")  # pragma: no cover - a component always has one


def layer_of(module: str, layers=LAYERS) -> int | None:
    """Index of the layer whose entry is the longest prefix of `module`, or None."""
    best, best_len = None, -1
    for i, (_, names) in enumerate(layers):
        for entry in names:
            if (module == entry or module.startswith(entry + ".")) and len(entry) > best_len:
                best, best_len = i, len(entry)
    return best


def layer_violations(graph: dict[str, list[Edge]], layers=LAYERS) -> list[str]:
    out = []
    for edges in graph.values():
        for e in edges:
            low, high = layer_of(e.source, layers), layer_of(e.target, layers)
            if low is not None and high is not None and high > low:
                out.append(
                    f"{e.source} (layer '{layers[low][0]}') imports {e.target} (layer '{layers[high][0]}') "
                    f"at line {e.line}"
                )
    return out


def describe(cycle: list[Edge]) -> str:
    return " -> ".join(f"{e.source} (line {e.line})" for e in cycle) + f" -> {cycle[0].source}"


# ----------------------------------------------------------------------------------- the package


def test_the_package_has_no_import_cycles():
    cycles = find_cycles(import_graph(), allowed=KNOWN_CYCLES)
    assert not cycles, "import cycles:\n" + "\n".join(describe(c) for c in cycles)


def test_known_cycles_still_exist():
    """An allow-list entry whose cycle is gone must be deleted, so the list cannot hide a new one."""
    graph = import_graph()
    for pair in KNOWN_CYCLES:
        sub = {name: [e for e in graph.get(name, []) if e.target in pair] for name in pair}
        assert find_cycles(sub), f"{sorted(pair)} no longer import each other: delete the KNOWN_CYCLES entry"


def test_lower_layers_never_import_higher_ones():
    violations = layer_violations(import_graph())
    assert not violations, "\n".join(violations)


def test_every_module_has_a_layer():
    unplaced = [name for name in import_graph() if name not in EXEMPT and layer_of(name) is None]
    assert not unplaced, f"add these modules to LAYERS in {Path(__file__).name}: {unplaced}"


# The package's top level: the lazy API, `python -m accelyolo`, and the script forms of the commands that
# `accelerate launch` takes by path. Everything else lives in the sub-package of its layer.
TOP_LEVEL_FILES = {"__init__.py", "__main__.py", "train.py", "validation.py", "evolve.py"}
SCRIPT_FORMS = {"train.py": "accelyolo.commands.train", "validation.py": "accelyolo.commands.validate"}
SCRIPT_FORMS["evolve.py"] = "accelyolo.commands.evolve"


def test_each_layer_is_a_sub_package_and_the_top_level_holds_only_the_launchers():
    """Issue 22: the folders draw the architecture. Each layer of `LAYERS` is one sub-package, and the top-level
    scripts stay launchable by path while holding no code of their own (each imports its command's `main`)."""
    assert {p.name for p in PACKAGE_DIR.glob("*.py")} == TOP_LEVEL_FILES
    for _, names in LAYERS:
        packages = [n for n in names if (PACKAGE_DIR / n.split(".", 1)[1]).is_dir()]
        assert packages, names
    for script, command in SCRIPT_FORMS.items():
        source = (PACKAGE_DIR / script).read_text(encoding="utf-8")
        assert f"from {command} import main" in source and 'if __name__ == "__main__":' in source, script
        assert len([n for n in ast.parse(source).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]) == 0


def test_the_table_keeps_low_level_modules_below_the_loop_and_entry_points():
    for low in LOW_LEVEL:
        for high in HIGH_LEVEL:
            assert layer_of(low) < layer_of(high), (low, high)


def test_imports_inside_functions_and_relative_imports_are_seen():
    graph = import_graph()
    assert any(
        e.target == "accelyolo.families" for e in graph["accelyolo.weights.checkpoint"]
    )  # inside load_checkpoint
    modules = {"accelyolo", "accelyolo.a", "accelyolo.sub", "accelyolo.sub.b", "accelyolo.sub.c"}
    code = "from . import c\nfrom ..a import x\nimport accelyolo.sub\ndef f():\n    from accelyolo.sub import b\n"
    edges = module_imports(code, "accelyolo.sub.b", False, modules)
    assert [(e.target, e.line) for e in edges] == [
        ("accelyolo.sub.c", 1),
        ("accelyolo.a", 2),
        ("accelyolo.sub", 3),
        ("accelyolo.sub.b", 5),
    ]


# ------------------------------------------------------------------- the checker can fail


def _fake_graph(imports: dict[str, list[str]], type_only: tuple[str, ...] = ()) -> dict[str, list[Edge]]:
    return {
        source: [
            Edge(source, target, line, f"{source}>{target}" in type_only) for line, target in enumerate(targets, 1)
        ]
        for source, targets in imports.items()
    }


def test_checker_flags_a_synthetic_cycle():
    graph = _fake_graph(
        {
            "accelyolo.a": ["accelyolo.b"],
            "accelyolo.b": ["accelyolo.c", "accelyolo.d"],
            "accelyolo.c": ["accelyolo.a"],
            "accelyolo.d": [],
            "accelyolo.e": ["accelyolo.e"],  # imports itself
        }
    )
    cycles = find_cycles(graph)
    assert sorted(describe(c) for c in cycles) == [
        "accelyolo.a (line 1) -> accelyolo.b (line 1) -> accelyolo.c (line 1) -> accelyolo.a",
        "accelyolo.e (line 1) -> accelyolo.e",
    ]
    # an allowed pair and a type-only import break their cycles; nothing else is let through
    two = _fake_graph({"accelyolo.a": ["accelyolo.b"], "accelyolo.b": ["accelyolo.a"]})
    assert find_cycles(two, allowed=(frozenset({"accelyolo.a", "accelyolo.b"}),)) == []
    assert find_cycles(two, allowed=(frozenset({"accelyolo.a", "accelyolo.c"}),)) != []
    typed = _fake_graph({"accelyolo.a": ["accelyolo.b"], "accelyolo.b": ["accelyolo.a"]}, ("accelyolo.b>accelyolo.a",))
    assert find_cycles(typed) == []


def test_checker_flags_a_lower_layer_importing_a_higher_one():
    graph = _fake_graph(
        {
            "accelyolo.data.dataset": ["accelyolo.core.boxes", "accelyolo.training.trainer"],
            "accelyolo.training.trainer": ["accelyolo.data"],
        }
    )
    assert layer_violations(graph) == [
        "accelyolo.data.dataset (layer 'data') imports accelyolo.training.trainer (layer 'training loop') at line 2"
    ]


# ------------------------------------------------------------------------------------ one home per fact

# (parameter or keyword name, value): numbers that `accelyolo.core.defaults` or the hyperparameter table owns.
OWNED_DEFAULTS = {
    ("conf_thres", 0.001),
    ("conf", 0.001),
    ("iou_thres", 0.7),
    ("iou", 0.7),
    ("iou", 0.45),
    ("max_det", 300),
    ("stride", 32),
}
# a flag by its spelling, or by the option name that `flags.add_option_flag` takes
FLAG_DEFAULTS = {
    (flag, value)
    for flags, value in (
        (("--conf", "conf_thres"), 0.001),
        (("--conf", "conf_thres"), 0.25),
        (("--iou", "iou_thres"), 0.7),
        (("--iou", "iou_thres"), 0.45),
        (("--max-det", "max_det"), 300),
    )
    for flag in flags
}


def _number(node: ast.AST | None) -> float | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    return None


def owned_numbers_written_again(source: str, hyperparameters: set[str]) -> list[str]:
    """Each place in `source` that writes one of the shared numbers as a literal instead of importing it:
    a parameter default or keyword argument of `OWNED_DEFAULTS`, a flag default of `FLAG_DEFAULTS`, a
    stride arithmetic (`% 32`, `// 32`, `* 32`), or `hyp.get("<hyperparameter>", <literal>)`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args.posonlyargs + node.args.args
            pairs = list(zip(args[len(args) - len(node.args.defaults) :], node.args.defaults))
            pairs += [(a, d) for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults) if d is not None]
            found += [
                f"line {d.lineno}: {a.arg}={_number(d)}" for a, d in pairs if (a.arg, _number(d)) in OWNED_DEFAULTS
            ]
        elif isinstance(node, ast.Call):
            found += [
                f"line {k.lineno}: {k.arg}={_number(k.value)}"
                for k in node.keywords
                if (k.arg, _number(k.value)) in OWNED_DEFAULTS
            ]
            flags = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            default = next((_number(k.value) for k in node.keywords if k.arg == "default"), None)
            found += [f"line {node.lineno}: {f} default {default}" for f in flags if (f, default) in FLAG_DEFAULTS]
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "get" and len(node.args) == 2:
                key = node.args[0]
                if isinstance(key, ast.Constant) and key.value in hyperparameters and _number(node.args[1]) is not None:
                    found.append(f"line {node.lineno}: .get({key.value!r}, {_number(node.args[1])})")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.FloorDiv, ast.Mult)):
            found += [f"line {node.lineno}: stride arithmetic with a literal 32"] * (_number(node.right) == 32)
    return found


def test_shared_numbers_have_one_home():
    """Validation and prediction thresholds, the largest stride and the hyperparameter defaults are written
    once (`accelyolo/core/defaults.py`, `accelyolo/core/hyp.py`) and imported everywhere else."""
    from accelyolo.core.hyp import HYPERPARAMETERS

    probe = owned_numbers_written_again(
        "def f(conf_thres=0.001, *, max_det=300):\n    x = y % 32\n    hyp.get('cls_pw', 1.0)\n"
        "parser.add_argument('--iou', default=0.7)\n",
        set(HYPERPARAMETERS),
    )
    assert sorted(probe) == sorted(
        [  # the checker itself finds each kind
            "line 1: conf_thres=0.001",
            "line 1: max_det=300",
            "line 2: stride arithmetic with a literal 32",
            "line 3: .get('cls_pw', 1.0)",
            "line 4: --iou default 0.7",
        ]
    ), probe
    offenders = {
        str(path.relative_to(PACKAGE_DIR)): found
        for path in sorted(PACKAGE_DIR.rglob("*.py"))
        if path.name not in ("defaults.py", "hyp.py")
        and (found := owned_numbers_written_again(path.read_text(encoding="utf-8"), set(HYPERPARAMETERS)))
    }
    assert not offenders, offenders


# The trainer classes whose build steps must return what they make (`accelyolo.training.records`), never store it.
TRAINER_MODULES = ("training/trainer.py", "training/experiment.py", "tasks/distill.py", "tasks/multitask.py")


def attribute_writes_in_build_steps(source: str) -> list[str]:
    """`Class.method: line N self.attr` for each write to an attribute of `self` (assignment, augmented or
    annotated assignment, `setattr(self, ...)`, `del self.x`) inside a method named `build_*` or `resolve_*`."""
    found = []
    for cls in ast.walk(ast.parse(source)):
        if not isinstance(cls, ast.ClassDef):
            continue
        for method in cls.body:
            if not isinstance(method, ast.FunctionDef) or not method.name.startswith(("build_", "resolve_")):
                continue
            for node in ast.walk(method):
                targets: list[ast.AST] = []
                if isinstance(node, ast.Assign):
                    targets = [t for target in node.targets for t in ast.walk(target)]
                elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                    targets = [node.target]
                elif isinstance(node, ast.Delete):
                    targets = list(node.targets)
                elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr":
                    first = node.args[0] if node.args else None
                    if isinstance(first, ast.Name) and first.id == "self":
                        found.append(f"{cls.name}.{method.name}: line {node.lineno} setattr(self, ...)")
                for target in targets:
                    value = getattr(target, "value", None)
                    if isinstance(target, ast.Attribute) and isinstance(value, ast.Name) and value.id == "self":
                        found.append(f"{cls.name}.{method.name}: line {node.lineno} self.{target.attr}")
    return found


def test_build_steps_return_what_they_make_and_write_no_trainer_attribute():
    """A build step's product reaches the trainer only as its return value (the data and loaders as the
    frozen records of `accelyolo.training.records`), so a step replaced in an experiment leaves nothing unset."""
    probe = attribute_writes_in_build_steps(
        "class T:\n"
        "    def build_x(self):\n        self.a = 1\n        self.b, c = 2, 3\n        self.n += 1\n"
        "        setattr(self, 'd', 4)\n        del self.e\n        other.f = 5\n        return self.g\n"
        "    def setup(self):\n        self.h = 6\n"
    )
    assert sorted(probe) == [
        "T.build_x: line 3 self.a",
        "T.build_x: line 4 self.b",
        "T.build_x: line 5 self.n",
        "T.build_x: line 6 setattr(self, ...)",
        "T.build_x: line 7 self.e",
    ], probe
    offenders = {
        name: found
        for name in TRAINER_MODULES
        if (found := attribute_writes_in_build_steps((PACKAGE_DIR / name).read_text(encoding="utf-8")))
    }
    assert not offenders, offenders


# Issue 22's size signal: no function of the package longer than this (signature, docstring and body).
MAX_FUNCTION_LINES = 60


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """`name: N lines` of every function or method of `source` longer than `limit` lines."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > limit:
                found.append(f"{node.name}: {length} lines")
    return found


def test_no_function_is_longer_than_the_size_signal():
    method = "class C:\n    def run(self):\n" + "".join(f"        x{i} = {i}\n" for i in range(4))  # 5 lines
    assert long_functions(method, limit=5) == []
    assert long_functions(method, limit=4) == ["run: 5 lines"]
    offenders = {
        str(path.relative_to(PACKAGE_DIR)): found
        for path in sorted(PACKAGE_DIR.rglob("*.py"))
        if (found := long_functions(path.read_text(encoding="utf-8")))
    }
    assert not offenders, f"split these (or raise MAX_FUNCTION_LINES with a reason): {offenders}"


def called_names(source: str) -> set[str]:
    """The names of the functions `source` calls (`f(...)` and `obj.f(...)`)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            names.add(func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", ""))
    return names


def test_training_and_the_val_command_build_their_validation_data_through_one_path():
    """Issue 22: the val split and its loader come from `validation_split` / `validation_loader` in both the
    experiment that builds a training run's data and `accelyolo val`; `YoloDataset` is constructed in the
    package only by those and for training."""
    for module in ("training/experiment.py", "commands/validate.py"):
        calls = called_names((PACKAGE_DIR / module).read_text(encoding="utf-8"))
        assert {"validation_split", "validation_loader"} <= calls, module
    builders = {
        str(path.relative_to(PACKAGE_DIR))
        for path in PACKAGE_DIR.rglob("*.py")
        if "YoloDataset" in called_names(path.read_text(encoding="utf-8"))
    }
    assert builders == {"training/experiment.py", "data/dataset.py"}, builders
    assert called_names("a.b(1)\nc()\n") == {"b", "c"}


def subclassed_bases(source: str, base: str) -> list[str]:
    """Names of the classes of `source` that list `base` (a name or an attribute `x.base`) among their bases."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            names = {b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", "") for b in node.bases}
            if base in names:
                found.append(node.name)
    return found


def test_features_are_experiments_not_trainer_subclasses():
    """Issue 22: a feature (a task, added loss terms) extends `Experiment`, which combines with the others and a
    user's; the package defines no subclass of `Trainer`, whose loop stays one."""
    assert subclassed_bases("class A(Trainer): ...\nclass B(t.Trainer): ...\nclass C(X): ...", "Trainer") == ["A", "B"]
    trainers = {
        str(path.relative_to(PACKAGE_DIR)): found
        for path in sorted(PACKAGE_DIR.rglob("*.py"))
        if (found := subclassed_bases(path.read_text(encoding="utf-8"), "Trainer"))
    }
    assert not trainers, trainers
    experiments = {
        path.name
        for path in PACKAGE_DIR.rglob("*.py")
        if subclassed_bases(path.read_text(encoding="utf-8"), "Experiment")
    }
    assert experiments == {"distill.py", "multitask.py"}, experiments
