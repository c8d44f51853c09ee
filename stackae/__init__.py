"""stackae: greedy layer-wise autoencoder pretraining, compared honestly with random init.

The Python API (stackae/api.py; the `stackae` commands are a thin layer over these functions):

    stack = stackae.pretrain_stack(data, layers=(256, 128), epochs=2)   # -> Stack
    run = stackae.finetune_classifier(stack, data, labels=1000)         # -> Classifier
    grid = stackae.run_ablation(data, seeds=(0, 1, 2))                  # -> Ablation

Names are imported on first use, so `import stackae` (and `stackae --help`) does not load torch.
"""
__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "pretrain_stack": "api", "finetune_classifier": "api", "run_ablation": "api",
    "plan_ablation": "api", "plan_tuning": "api", "run_tuning": "api", "load_data": "api",
    "load_stack": "artifacts", "load_model": "artifacts", "load_ablation": "artifacts",
    "Stack": "artifacts", "Classifier": "artifacts", "Ablation": "artifacts",
    "Data": "data", "PretrainConfig": "config", "FinetuneConfig": "config",
    "AblateConfig": "config_grid", "ConfigError": "schema", "DataError": "data",
    "CheckpointError": "checkpoint", "RunError": "runlog", "Diverged": "runlog",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name):  # PEP 562: load the defining module on first use
    if name in _EXPORTS:
        import importlib
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'stackae' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
