"""The import boundary of t2ijax/config.py (schema + validation): importing it loads no data, cache,
metrics, model or numerical code, no import cycle runs through it, and each axis's names are written
once (t2ijax/registry.py NAMES) and implemented by the module that owns them."""
import ast
import importlib
import os
import subprocess
import sys

from t2ijax import registry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("jax", "numpy", "tensorflow", "tensorflow_datasets", "PIL", "flax", "optax", "orbax",
         "grain", "safetensors", "transformers")


def test_importing_the_config_loads_no_data_model_or_metrics_code():
    probe = ("import sys, t2ijax.config; print(' '.join(sorted(m for m in sys.modules "
             "if m.split('.')[0] in ('t2ijax', 'configs') or m.split('.')[0] in %r)))" % (HEAVY,))
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["t2ijax", "t2ijax.config", "t2ijax.defaults", "t2ijax.errors",
                   "t2ijax.registry"], out


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, REPO).removesuffix(".py").replace(os.sep, ".")
    return rel.removesuffix(".__init__")


def import_graph() -> dict[str, set[str]]:
    """t2ijax module -> the t2ijax modules it imports anywhere in its file (deferred imports inside
    functions count: they run whenever that function does), with each module's parent packages
    but the root: t2ijax/__init__.py imports nothing on import (load_run is looked up on use)."""
    paths = [os.path.join(d, f) for d, _, files in os.walk(os.path.join(REPO, "t2ijax"))
             for f in files if f.endswith(".py")]
    modules = {_module_name(p): p for p in paths}

    def resolve(name: str) -> set[str]:
        parts = name.split(".")
        return {".".join(parts[:k]) for k in range(2, len(parts) + 1)} & modules.keys()

    graph = {}
    for name, path in modules.items():
        with open(path) as f:
            tree = ast.parse(f.read())
        edges = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    edges |= resolve(alias.name)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                edges |= resolve(node.module)
                edges |= set().union(*(resolve(f"{node.module}.{a.name}") for a in node.names))
        graph[name] = edges - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_runs_through_the_config():
    through = [sorted(c) for c in cycles(import_graph()) if "t2ijax.config" in c]
    assert not through, f"import cycles through t2ijax.config: {through}"


OWNERS = ("t2ijax.data.sources", "t2ijax.data.augmentation", "t2ijax.data.write_records",
          "t2ijax.models.build", "t2ijax.models.prx", "t2ijax.models.autoencoders",
          "t2ijax.models.autoencoders.normalization", "t2ijax.models.text.cleaning",
          "t2ijax.models.text.loading", "t2ijax.diffusion.paths",
          "t2ijax.diffusion.parameterization",
          "t2ijax.diffusion.losses", "t2ijax.diffusion.timesteps", "t2ijax.diffusion.samplers",
          "t2ijax.training.optim", "t2ijax.training.nonfinite", "t2ijax.techniques.routing",
          "t2ijax.techniques.repa", "t2ijax.techniques.teachers", "t2ijax.metrics.evaluation")
TUPLE_OWNERS = {"text_encoder.init": ("t2ijax.models.text.loading", "INITS"),
                "data.text_dtype": ("t2ijax.data.write_records", "STORAGE_DTYPES"),
                "latents.posterior": ("t2ijax.data.write_records", "POSTERIORS"),
                "model.pos_embed": ("t2ijax.models.prx", "POS_EMBEDS"),
                "routing.method": ("t2ijax.techniques.routing", "METHODS"),
                "repa.projector": ("t2ijax.techniques.repa", "PROJECTORS"),
                "nonfinite.policy": ("t2ijax.training.nonfinite", "POLICIES"),
                "teacher.name": ("t2ijax.techniques.teachers", "TEACHERS"),
                "eval.metrics": ("t2ijax.metrics.evaluation", "METRICS")}


def test_every_declared_name_is_implemented_by_its_owner():
    registries = []
    for name in OWNERS:
        module = importlib.import_module(name)
        registries += [v for v in vars(module).values() if isinstance(v, registry.Registry)]
    assert {r.field for r in registries} >= {"data.name", "diffusion.path", "sampler.name"}
    for table in registries:  # data.sources' DATASETS and BUCKETED each implement every data.name
        assert table.missing() == [], f"{table.field}: not registered: {table.missing()}"
    for field, (module, name) in TUPLE_OWNERS.items():
        assert getattr(importlib.import_module(module), name) is registry.names(field), field
