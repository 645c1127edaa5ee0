"""Rules about the source itself, checked by reading it: no import circles, one way to a connection."""

from __future__ import annotations

import ast
from pathlib import Path

import gateway

ROOT = Path(gateway.__file__).parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _runtime_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Every import that runs, at module level or inside a function; `if TYPE_CHECKING:` blocks never run."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the gateway modules it imports when it runs (a name imported from a package
    counts as that submodule when one has the name, else as the package)."""
    modules = _modules()

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets: set[str | None] = set()
        for node in _runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {known(alias.name) for alias in node.names}
                continue
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets |= {known(f"{base}.{a.name}") if f"{base}.{a.name}" in modules else known(base) for a in node.names}
        graph[module] = {t for t in targets if t and t != module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := walk(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := walk(start)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_circle_through_a_lazy_import():
    tree = ast.parse("import os\ndef later():\n    from a import b\nif TYPE_CHECKING:\n    import c\n")
    assert [ast.unparse(n) for n in _runtime_imports(tree)] == ["import os", "from a import b"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "d": {"a", "c"}}) is None


def test_no_module_of_the_gateway_imports_itself_through_a_circle():
    graph = import_graph()
    assert graph["gateway.encoders.fetch"] >= {"gateway.encoders.cache", "gateway.encoders.convert.fetched"}
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle or []) + "; move what both need into a third module"


# where a pooled connection may be taken without the retry construct, and why
RAW_ACQUIRE_ALLOWED = {
    "store/retry.py": "the construct itself (with_connection, in_transaction)",
    "store/session.py": "read_only's first attempt, which falls back to with_connection on a transient failure",
}


def raw_acquires(source: str) -> list[int]:
    """Lines that take a pooled connection directly: `<pool>.acquire(...)`, or any `.acquire()` without arguments."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "acquire":
            if "pool" in ast.unparse(node.func.value).lower() or not node.args:
                lines.append(node.lineno)
    return lines


def test_the_acquire_finder_tells_a_pool_from_a_semaphore():
    source = "async def f(pool, app, slots):\n    async with app[POOL].acquire() as c: pass\n    await slots.acquire(True)\n    await pool.acquire(timeout=1)\n"
    assert raw_acquires(source) == [2, 4]


def test_every_pooled_connection_goes_through_the_retry_construct():
    found = {}
    for path in ROOT.rglob("*.py"):
        name = path.relative_to(ROOT).as_posix()
        if name not in RAW_ACQUIRE_ALLOWED and (lines := raw_acquires(path.read_text())):
            found[name] = lines
    assert not found, (
        f"raw pool.acquire() at {found}: take the connection through gateway/store/retry.py "
        "(with_connection / in_transaction), or add the place to RAW_ACQUIRE_ALLOWED with the reason"
    )
