"""The shape issue 13 asks the code to keep, checked on the source itself (parsed with `ast`):
no module over 400 lines, no function over 60, the engine free of HTTP and of the layers above
it, and every import between Tether's packages following the dependency rule below."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# Functions allowed over MAX_FUNCTION_LINES: generated tables only, as "module:function" ->
# why. None exists today; an entry that is no longer long (or no longer exists) fails too.
GENERATED_TABLES: dict[str, str] = {}

# The dependency rule, top tier first: a module may import its own package and any package of
# a lower tier, never one of its own tier (but the SIBLINGS below) or above. "__init__" is the
# `tether` package itself (its version). `tether.testing` is outside the rule: it may import
# anything, and nothing but itself may import it.
TIERS: tuple[tuple[str, ...], ...] = (
    ("__main__",),
    ("cli",),  # the entry point
    ("logs",),  # process-wide logging set-up, done by the entry point; uses compaction's redact
    ("api", "web"),  # HTTP: the API, and the dashboard at /ui
    ("protocols",),  # Chat Completions today, Responses later: turn events → wire
    ("engine", "importing"),  # one turn (no HTTP, no wire shapes); other agents' files read in
    ("compaction", "coordination", "store", "upstream", "tools"),
    (
        "model",
        "config",
        "config_tools",
        "errors",
        "keys",
        "metrics",
        "__init__",
    ),  # the domain records and what all share
)
# Imports allowed between packages of one tier, as (importing package, imported module) -> why.
SIBLINGS: dict[tuple[str, str], str] = {
    ("config", "tether.config_tools"): "the settings hold the tool records (split for size)",
    ("compaction", "tether.upstream.wire"): "tokens are counted on a message as the upstream "
    "receives it",
    ("api", "tether.web"): "the app mounts the dashboard's routes at /ui (web never imports api)",
}
OUTSIDE = "testing"
ENGINE_MUST_NOT_IMPORT = ("starlette", "tether.api", "tether.protocols")


@dataclass(frozen=True, kw_only=True, slots=True)
class Import:
    module: str  # the importing module, e.g. tether.engine.turn
    target: str  # what it imports, e.g. tether.store.base
    line: int


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def imports_of(module: str, path: Path) -> Iterator[Import]:
    """Every import in the module, at any depth (in functions, under TYPE_CHECKING too), with
    relative imports resolved; `from a import b` counts as importing `a.b` when that is a module
    of ours (so the rule sees the module, not only its package)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module=module, target=alias.name, line=node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, *([node.module] if node.module else [])])
            for alias in node.names:
                full = f"{base}.{alias.name}"
                target = full if full in KNOWN else base
                yield Import(module=module, target=target, line=node.lineno)


KNOWN = {name for name, _ in modules()}


def package_of(module: str) -> str:
    """The top-level package under `tether` a module belongs to ("__init__" for `tether`)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def tier_of(package: str) -> int:
    for rank, tier in enumerate(TIERS):
        if package in tier:
            return rank
    raise AssertionError(f"tether.{package} is in no tier of TIERS: give it one")


def layer_violations(imports: Iterable[Import]) -> list[str]:
    """Each import between Tether's packages that the dependency rule forbids, as text."""
    bad = []
    for imp in imports:
        if not (imp.target == "tether" or imp.target.startswith("tether.")):
            continue
        src, dst = package_of(imp.module), package_of(imp.target)
        where = f"{imp.module}:{imp.line} imports {imp.target}"
        if src in (dst, OUTSIDE):
            continue
        if dst == OUTSIDE:
            bad.append(f"{where} (nothing may import tether.{OUTSIDE})")
        elif tier_of(dst) < tier_of(src):
            bad.append(f"{where} (tether.{dst} is in a higher tier)")
        elif tier_of(dst) == tier_of(src) and not any(
            s == src and (imp.target == m or imp.target.startswith(m + ".")) for s, m in SIBLINGS
        ):
            bad.append(f"{where} (tether.{dst} is in the same tier; not in SIBLINGS)")
    return bad


def all_imports() -> list[Import]:
    return [imp for name, path in modules() for imp in imports_of(name, path)]


def function_lengths() -> Iterator[tuple[str, int]]:
    """("module:qualified.name", lines from `def` to its last line) for every function."""
    for module, path in modules():
        tree = ast.parse(path.read_text(), str(path))
        yield from _functions(module, tree, "")


def _functions(module: str, node: ast.AST, prefix: str) -> Iterator[tuple[str, int]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            name = f"{prefix}{child.name}"
            yield f"{module}:{name}", (child.end_lineno or child.lineno) - child.lineno + 1
            yield from _functions(module, child, f"{name}.")
        elif isinstance(child, ast.ClassDef):
            yield from _functions(module, child, f"{prefix}{child.name}.")
        else:
            yield from _functions(module, child, prefix)


def test_no_module_in_src_is_over_400_lines() -> None:
    sizes = {str(p.relative_to(SRC)): len(p.read_text().splitlines()) for _, p in modules()}
    assert len(sizes) > 50 and max(sizes.values()) > 100  # the walk finds the modules
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_no_function_is_over_60_lines_but_generated_tables() -> None:
    lengths = dict(function_lengths())
    assert len(lengths) > 300 and lengths["tether.config:load_settings"] > 1  # the walk works
    long = {name: n for name, n in lengths.items() if n > MAX_FUNCTION_LINES}
    stale = [name for name in GENERATED_TABLES if name not in long]
    assert stale == []  # an allowed table that is gone or short leaves the list
    assert {name: n for name, n in long.items() if name not in GENERATED_TABLES} == {}


def test_the_engine_imports_nothing_of_http_the_api_or_the_protocols() -> None:
    engine = [imp for imp in all_imports() if package_of(imp.module) == "engine"]
    assert any(imp.target.startswith("tether.store") for imp in engine)  # the parse sees them
    bad = [
        f"{imp.module}:{imp.line} imports {imp.target}"
        for imp in engine
        for banned in ENGINE_MUST_NOT_IMPORT
        if imp.target == banned or imp.target.startswith(banned + ".")
    ]
    assert bad == []


def test_only_the_api_and_the_entry_point_import_the_api() -> None:
    importers = {
        package_of(imp.module)
        for imp in all_imports()
        if imp.target == "tether.api" or imp.target.startswith("tether.api.")
    }
    assert importers - {"api", "cli", OUTSIDE} == set()


def test_every_import_follows_the_dependency_rule() -> None:
    assert layer_violations(all_imports()) == []


def test_the_rule_catches_what_it_forbids() -> None:
    """The checker itself: each kind of forbidden import is reported, allowed ones are not."""

    def check(module: str, target: str) -> list[str]:
        return layer_violations([Import(module=module, target=target, line=1)])

    assert check("tether.engine.turn", "tether.api.app")  # upward
    assert check("tether.store.sqlite", "tether.coordination.local")  # sideways
    assert check("tether.api.app", "tether.testing.fake")  # into testing
    assert check("tether.compaction.cut", "tether.upstream.client")  # a sibling not listed
    assert not check("tether.compaction.cut", "tether.upstream.wire")  # a listed sibling
    assert not check("tether.api.app", "tether.model")  # downward, skipping tiers
    assert not check("tether.testing.fake", "tether.api.app")  # testing may import anything
    assert not check("tether.engine.turn", "starlette.requests")  # not ours: the engine test
    every = {package_of(name) for name in KNOWN} - {OUTSIDE}
    assert all(tier_of(package) >= 0 for package in every)  # every package has a tier
