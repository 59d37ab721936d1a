"""gptbook: the helper package that the chapters of the GPT companion import.

Import modules explicitly (`from gptbook import model, config`); the names below are lazy
re-exports so that `import gptbook` stays cheap.
"""
__version__ = "0.1.0"

_LAZY = {"GPT": "model", "GPTConfig": "model", "get_profile": "config", "setup": "config"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'gptbook' has no attribute {name!r}")
