"""How the package is put together: no import circles, and a new setting costs one edit."""
import ast
import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest

import stackae
from stackae.options import options_from

PACKAGE = Path(stackae.__file__).parent


def imports_of(path: Path) -> set[str]:
    """The package modules a module imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("stackae."):
            found.add(node.module.split(".")[1])
    return found


def test_the_package_has_no_import_circle():
    graph = {p.stem: imports_of(p) for p in PACKAGE.glob("*.py")}
    state = {}

    def visit(m, path):
        if state.get(m) == "open":
            raise AssertionError("import circle: " + " -> ".join(path + [m]))
        if state.get(m) != "done":
            state[m] = "open"
            for n in sorted(graph.get(m, ())):
                visit(n, path + [m])
            state[m] = "done"
    for m in sorted(graph):
        visit(m, [])


def probe_module(name: str, source: str):
    """A fresh module of the package run from `source`."""
    spec = importlib.util.spec_from_loader(f"stackae.{name}", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "stackae"
    sys.modules[spec.name] = module  # dataclasses resolve the fields' types through it
    exec(compile(source, f"{name}.py", "exec"), module.__dict__)
    return module


def config_with_extra_line(after: str, line: str):
    """stackae.config as it would be with one more line in it, and the grid's settings
    (config_grid) derived from it, loaded as fresh modules: the grid's AblateConfig."""
    source = (PACKAGE / "config.py").read_text()
    assert after in source
    probe_module("_config_probe", source.replace(after, after + line, 1))
    grid = (PACKAGE / "config_grid.py").read_text()
    assert "from .config import" in grid
    return probe_module("_config_grid_probe",
                        grid.replace("from .config import", "from ._config_probe import"))


def test_a_new_fine_tuning_setting_reaches_every_cell_with_one_edit():
    anchor = '    freeze_encoder: bool = opt(False, "Train only the head (a linear probe of the encoder).")\n'
    cfg = config_with_extra_line(anchor, '    max_norm: float = opt(0.0, "A new setting.")\n')
    grid = cfg.AblateConfig(max_norm=3.0, seeds=(0, 1))
    assert "max_norm" in {f.name for f in dataclasses.fields(grid)}
    cell = grid.finetune_config("random", 1, 2, "100", None)
    assert cell.max_norm == 3.0 and cell.seed == 1
    params = options_from(cfg.AblateConfig)(lambda **k: None).__click_params__
    assert "--max-norm" in [o for p in params for o in p.opts]  # and `stackae ablate` has its flag


def test_a_new_pretraining_setting_reaches_the_pretraining_runs():
    anchor = '    epochs: tuple[int, ...] = opt((10,), "Epochs per layer; one value, or one per layer.",\n                                  per_layer=True)\n'
    cfg = config_with_extra_line(anchor, '    warmup: int = opt(0, "Pretraining warm-up steps.")\n')
    grid = cfg.AblateConfig(warmup=5)
    assert grid.pretrain_config("denoising", 0, 2).warmup == 5


@pytest.mark.parametrize("command,function", [("pretrain", "pretrain_stack"),
                                              ("finetune", "finetune_classifier"),
                                              ("ablate", "run_ablation"),
                                              ("ablate --dry-run", "plan_ablation"),
                                              ("tune", "run_tuning"),
                                              ("tune --dry-run", "plan_tuning")])
def test_each_command_is_a_call_of_the_api(command, function, tmp_path, monkeypatch):
    """The command line parses and prints; the run itself is the API function, given exactly
    the settings the command line names (flags and --config), not click's defaults."""
    import stackae.api
    from click.testing import CliRunner
    from stackae.cli import cli
    calls = []

    class Called(Exception):
        pass

    def record(*args, **kwargs):
        calls.append(kwargs)
        raise Called
    monkeypatch.setattr(stackae.api, function, record)
    config = tmp_path / "c.json"
    config.write_text('{"val_size": 300}')
    r = CliRunner().invoke(cli, [*command.split(), "--config", str(config), "--train-size", "500",
                                 "--out", str(tmp_path / "r")])
    assert isinstance(r.exception, Called) and len(calls) == 1
    run = ("out", "resume", "quiet", "shard", "trials", "space", "tune_seeds", "trials_at_once",
           "prune_after")
    settings = {k: v for k, v in calls[0].items() if k not in run}
    assert settings == {"val_size": 300, "train_size": 500}
    assert calls[0]["out"] == tmp_path / "r"
