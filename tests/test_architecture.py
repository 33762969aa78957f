"""The import graph keeps its layers: infrastructure imports no domain, and a domain imports
only the domains below it. Only the composition root (the app, the CLI, the dependencies)
wires everything together."""

import ast
from pathlib import Path

import pytest

import shop

SOURCE = Path(shop.__file__).parent

# Top to bottom: a module may import its own layer and the layers below it.
LAYERS = [
    {"audit", "admin"},
    {"returns"},
    {"orders"},
    {"cart", "pricing", "catalog_cache"},
    {"discounts", "catalog", "accounts"},
    {"payments", "idempotency"},
    # Infrastructure (config, clock, money, errors, db, documents, the embedded server,
    # pagination, observability, metrics, middleware, the server protocol, the docs):
    # imports no domain.
    {"kit"},
]
COMPOSITION = {"main", "cli", "deps", "background", "demo", "ops", "__init__"}


def layer_of(part: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if part in layer)


def shop_imports(path: Path) -> set[str]:
    """The top-level parts of ``shop`` (``orders``, ``db``, ...) that a module imports."""
    parts = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        parts |= {name.split(".")[1] for name in names if name.startswith("shop.")}
    return parts


MODULES = sorted((path.relative_to(SOURCE), shop_imports(path)) for path in SOURCE.rglob("*.py"))


def test_every_module_has_a_place_in_the_layers() -> None:
    placed = set().union(*LAYERS) | COMPOSITION
    assert {path.parts[0].removesuffix(".py") for path, _ in MODULES} <= placed


@pytest.mark.parametrize(("path", "imports"), MODULES, ids=[str(p) for p, _ in MODULES])
def test_a_module_imports_only_its_own_layer_and_those_below(path: Path, imports: set[str]) -> None:
    own = path.parts[0].removesuffix(".py")
    if own in COMPOSITION:
        return
    allowed = set().union(*LAYERS[layer_of(own) :])
    if path.name == "router.py":
        allowed.add("deps")  # the web edge takes the wiring's dependencies
    assert imports <= allowed, f"{path} imports {sorted(imports - allowed)}"


def test_each_domain_keeps_its_errors_in_one_module() -> None:
    """A domain's errors live with its documents (``models.py``); a router, a service or a
    second module of the domain defines none."""
    import shop.main  # noqa: F401  (imports every module with an error class)
    from shop.kit.errors import ShopError

    def every(cls: type[ShopError]) -> list[type[ShopError]]:
        return [cls, *(d for sub in cls.__subclasses__() for d in every(sub))]

    homes = {error.__module__ for error in every(ShopError)}
    allowed = {"shop.kit.errors", "shop.kit.pagination", "shop.payments.provider"}
    allowed.add("shop.idempotency")
    assert {home for home in homes if not home.endswith(".models")} <= allowed, homes


def test_the_top_level_shows_the_composition_root_the_shared_services_and_the_domains() -> None:
    """Infrastructure lives in ``shop.kit``; beside it, at most 12 modules and the domains."""
    modules = sorted(p.stem for p in SOURCE.glob("*.py"))
    assert len(modules) <= 12, modules
    packages = sorted(p.name for p in SOURCE.iterdir() if (p / "__init__.py").exists())
    assert "kit" in packages
    kit = {path.parts[1].removesuffix(".py") for path, _ in MODULES if path.parts[0] == "kit"}
    assert {"config", "clock", "money", "errors", "db", "documents", "embedded"} <= kit
    assert {"pagination", "observability", "metrics", "middleware", "server", "docs"} <= kit
