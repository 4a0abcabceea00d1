"""The layout DESIGN.md promises, checked on the source: dependency direction, no import cycles, no
branching on a system's name outside its own package, configs free of JAX."""

import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYSTEMS = ("muslse", "one_vs_rest", "rush", "rush_baselines", "samplecnn", "tagprop", "wmf",
           "won")


def _modules(top: str) -> dict[str, str]:
  """Dotted module name -> file path of every .py under `top` (a folder of ROOT)."""
  out = {}
  for folder, _, files in os.walk(os.path.join(ROOT, top)):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
        if parts[-1] == "__init__":
          parts = parts[:-1]
        out[".".join(parts)] = path
  return out


MODULES = {**_modules("musemb"), **_modules("configs"), **_modules("launch")}


def _imports(path: str, module: str, top_level_only: bool) -> set[str]:
  """Modules `path` imports (resolved to modules of this repo where they are one)."""
  tree = ast.parse(open(path).read())
  nodes = tree.body if top_level_only else list(ast.walk(tree))
  found = set()
  for node in nodes:
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        pkg = module.split(".")[:len(module.split(".")) - node.level + (path.endswith("__init__.py"))]
        base = ".".join(pkg + ([node.module] if node.module else []))
      for a in node.names:
        found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base)
  return found


def _deps(module: str, top_level_only: bool = False) -> set[str]:
  return _imports(MODULES[module], module, top_level_only)


def _under(module: str, package: str) -> bool:
  return module == package or module.startswith(package + ".")


@pytest.mark.parametrize("package, forbidden", [
    ("musemb.data", ("musemb.models", "musemb.samplers", "musemb.objectives", "musemb.systems",
                     "musemb.train")),
    ("musemb.models", ("musemb.data", "musemb.systems", "musemb.train", "musemb.samplers",
                       "musemb.objectives")),
    ("musemb.objectives", ("musemb.data", "musemb.models", "musemb.samplers", "musemb.systems",
                           "musemb.train")),
    ("musemb.samplers", ("musemb.data", "musemb.models", "musemb.objectives", "musemb.systems",
                         "musemb.train")),
    ("musemb.text", ("musemb.data", "musemb.models", "musemb.systems", "musemb.train")),
    ("musemb.reports", ("musemb.data", "musemb.models", "musemb.systems", "musemb.train")),
    ("musemb.systems", ("musemb.train", "launch", "configs")),
    ("musemb", ("launch", "configs")),
])
def test_dependencies_run_one_way(package, forbidden):
  bad = [(m, d) for m in MODULES if _under(m, package)
         for d in _deps(m) if any(_under(d, f) for f in forbidden)]
  assert not bad, bad


def test_configs_import_nothing_heavier_than_ml_collections():
  for module in MODULES:
    if _under(module, "configs"):
      extra = {d for d in _deps(module) if not (_under(d, "configs") or d in (
          "ml_collections", "__future__"))}
      assert not extra, (module, extra)


def test_no_import_cycle():
  """Module-level imports between repo modules form no cycle (a package's own `__init__`
  importing its submodules is not an edge back from them)."""
  graph = {m: {d for d in _deps(m, top_level_only=True) if d in MODULES and d != m}
           for m in MODULES}
  state, stack = {}, []

  def visit(m):
    state[m] = "open"
    stack.append(m)
    for d in graph[m]:
      if _under(m, d):        # a submodule importing a name from its package's __init__
        continue
      if state.get(d) == "open":
        raise AssertionError(f"import cycle: {' -> '.join(stack[stack.index(d):] + [d])}")
      if d not in state:
        visit(d)
    stack.pop()
    state[m] = "done"

  for m in sorted(graph):
    if m not in state:
      visit(m)


def test_no_module_outside_a_system_package_tests_a_system_name():
  pattern = re.compile(r"== \"(?:%s)\"|system == |system != " % "|".join(SYSTEMS))
  bad = []
  for module, path in MODULES.items():
    if _under(module, "musemb.systems") and module != "musemb.systems":
      continue
    for n, line in enumerate(open(path), 1):
      if pattern.search(line):
        bad.append(f"{path}:{n}: {line.strip()}")
  assert not bad, "\n".join(bad)


def test_old_top_level_modules_are_gone():
  for old in ("musemb/report.py", "musemb/report_won.py", "musemb/report_listening.py",
              "musemb/wordvec.py", "musemb/wmf_run.py", "musemb/wmf.py", "musemb/proxy.py",
              "musemb/data/bof_data.py", "musemb/data/tag_data.py", "musemb/data/audio_data.py"):
    assert not os.path.exists(os.path.join(ROOT, old)), old


def test_every_registered_system_is_a_package_with_the_contract():
  from musemb import systems
  for name in SYSTEMS:
    assert os.path.isdir(os.path.join(ROOT, "musemb", "systems", name)), name
  assert set(systems.names()) == set(SYSTEMS)
  for name in SYSTEMS:
    system = systems.get(name)
    assert system.name == name and callable(system.report)
    assert system.fit is not None or all(
        callable(f) for f in (system.load_data, system.init, system.loss, system.evaluate,
                              system.write_outputs)), name


def test_config_constants_match_the_models():
  """configs/ repeat a few model constants (so parsing a config loads no JAX); keep them equal."""
  from configs import samplecnn as samplecnn_config
  from configs import won as won_config
  from musemb.models import samplecnn
  from musemb.models import shortchunk
  assert samplecnn_config.LEE_WIDTHS == samplecnn.LEE_WIDTHS
  from configs import tagprop as tagprop_config
  assert tagprop_config.LEE_WIDTHS == samplecnn.LEE_WIDTHS
  assert samplecnn_config.HEADS == samplecnn.HEADS
  assert won_config.SAMPLE_RATE == shortchunk.SAMPLE_RATE
  assert won_config.NUM_SAMPLES == shortchunk.NUM_SAMPLES
  assert won_config.TORCH_BN_MOMENTUM == shortchunk.TORCH_BN_MOMENTUM
  assert won_config.won_widths(128) == shortchunk.WON_WIDTHS == shortchunk.won_widths(128)
  assert won_config.won_widths(16) == shortchunk.won_widths(16)
