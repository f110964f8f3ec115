"""Model plugins: a model that lives in the user's own package (docs/plugins.md).

A plugin package declares an entry point in the group ``golfbench.models``; the entry point names a
``ModelPlugin`` (or a zero-argument callable returning one):

    [project.entry-points."golfbench.models"]
    deltanet = "golf_deltanet.spec:PLUGIN"

The plugin carries the framework-free half of the model, its ``ModelSpec`` (presets, canonical shapes, the
parameter and FLOP formulas, control tensors, optimizer groups, the canonical init), and, per framework, the
implementation as an import string ``"package.module:attr"`` that only that framework's backend imports (the
harness never imports torch or jax), plus the implementation's source files, which count toward the cap under
the one code rule (harness/code.py): the backend's shared files + the model's own files.

Plugins are discovered lazily, the first time the model registry (``harness.models.SPECS`` / ``get_spec``) is
read. A plugin that fails to load (import error, wrong object, a name taken by another model) is skipped with
a one-line warning on stderr naming its package; it never stops an unrelated command.
"""

from __future__ import annotations

import functools
import importlib
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from golfbench.harness.errors import GolfError

GROUP = "golfbench.models"
BUILTIN_SOURCE = "golfbench"  # the "package" column of `golf models` for the built-in specs
FRAMEWORKS = ("jax", "torch")


@dataclass(frozen=True)
class ModelPlugin:
    """One plugin model.

    ``spec``: the ModelSpec (its ``init_fn`` draws the canonical initial weights in numpy).
    ``implementations``: framework ("jax" | "torch") -> ``"package.module:attr"``; for JAX ``attr`` is an NNX
    module class built as ``Cls(config: dict, dtype)`` whose ``__call__(idx int32 (B, T))`` returns fp32 logits
    (B, T, V), with its parameters at the spec's canonical names.
    ``code_files``: framework -> file paths relative to ``root`` (the plugin package's folder): the model's own
    source, counted toward the cap with the backend's shared files. File names must not collide with the
    backend's shared file names (a run snapshots files by name).
    ``root``: the folder ``code_files`` are relative to (usually ``Path(__file__).resolve().parent``).
    ``source``: the distribution the plugin came from (filled in at discovery).
    """

    spec: Any  # golfbench.harness.models.ModelSpec (not imported here: models imports this module)
    implementations: dict[str, str]
    code_files: dict[str, tuple[str, ...]] = field(default_factory=dict)
    root: Path | None = None
    source: str = ""

    def files(self, framework: str) -> list[Path]:
        """The model's own counted files for ``framework``, as absolute paths."""
        root = Path(self.root) if self.root is not None else Path(".")
        return [root / f for f in self.code_files.get(framework, ())]

    def implementation(self, framework: str) -> Any:
        """Import and return the ``framework`` implementation (called by that framework's backend only).

        Raises GolfError when the plugin has no implementation for ``framework`` or it cannot be imported."""
        target = self.implementations.get(framework)
        if not target:
            raise GolfError(
                f"model '{self.spec.name}' (package {self.source}) is not implemented in {framework}:"
                f" it implements {', '.join(sorted(self.implementations)) or 'nothing'}"
            )
        module_name, _, attr = target.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr.split(".") if attr else ():
                obj = getattr(obj, part)
        except Exception as exc:  # a plugin's import failing is one line, naming the plugin
            raise GolfError(
                f"model '{self.spec.name}' (package {self.source}): cannot load its {framework} implementation"
                f" '{target}': {type(exc).__name__}: {exc}"
            ) from None
        return obj


_WARNINGS: list[str] = []


def load_warnings() -> list[str]:
    """The one-line warnings of plugins that failed to load (after discovery)."""
    discover()
    return list(_WARNINGS)


def _warn(message: str) -> None:
    _WARNINGS.append(message)
    print(f"warning: {message}", file=sys.stderr)


def _check(plugin: Any, ep_name: str, source: str) -> ModelPlugin:
    from golfbench.harness.models import ModelSpec, check_name

    if callable(plugin) and not isinstance(plugin, ModelPlugin):
        plugin = plugin()
    if not isinstance(plugin, ModelPlugin):
        raise TypeError(f"entry point '{ep_name}' gives {type(plugin).__name__}, not a ModelPlugin")
    if not isinstance(plugin.spec, ModelSpec):
        raise TypeError("its spec is not a golfbench ModelSpec")
    check_name("model", plugin.spec.name)
    if plugin.spec.init_fn is None:
        raise TypeError("its spec has no init_fn (the canonical initial weights)")
    odd = sorted(set(plugin.implementations) - set(FRAMEWORKS))
    if odd or not plugin.implementations:
        raise TypeError(f"implementations must map {' | '.join(FRAMEWORKS)} to 'module:attr' (got {odd or 'none'})")
    return ModelPlugin(
        plugin.spec,
        dict(plugin.implementations),
        {k: tuple(v) for k, v in plugin.code_files.items()},
        plugin.root,
        source,
    )


@functools.cache
def discover() -> dict[str, ModelPlugin]:
    """{model name: plugin} of every installed ``golfbench.models`` entry point that loads (cached).

    Never raises: a broken plugin is left out with a one-line warning naming its package."""
    from golfbench.harness.models import BUILTIN_SPECS

    found: dict[str, ModelPlugin] = {}
    try:
        eps = sorted(metadata.entry_points(group=GROUP), key=lambda e: (e.name, e.value))
    except Exception as exc:  # a corrupt installation's metadata must not break the CLI
        _warn(f"cannot list model plugins: {exc}")
        return found
    for ep in eps:
        source = getattr(getattr(ep, "dist", None), "name", None) or ep.value.split(".")[0]
        try:
            plugin = _check(ep.load(), ep.name, source)
        except Exception as exc:
            _warn(f"model plugin '{ep.name}' from package {source} was not loaded: {type(exc).__name__}: {exc}")
            continue
        name = plugin.spec.name
        if name in BUILTIN_SPECS or name in found:
            owner = BUILTIN_SOURCE if name in BUILTIN_SPECS else found[name].source
            _warn(f"model plugin '{ep.name}' from package {source} was not loaded: model '{name}' is {owner}'s")
            continue
        found[name] = plugin
    return found


def get_plugin(name: str) -> ModelPlugin | None:
    """The plugin that provides model ``name``, or None for a built-in (or unknown) model."""
    return discover().get(name)


def source_of(name: str) -> str:
    """The package a model comes from: ``golfbench`` for the built-ins, else the plugin's distribution."""
    plugin = get_plugin(name)
    return plugin.source if plugin else BUILTIN_SOURCE
