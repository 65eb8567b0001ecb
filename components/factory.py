"""Components whose parameters are derived from the technique's config dataclasses.

KFP reads a lightweight component's interface from its function's signature and ships the function's
source to the container. `technique_component` writes that function: its parameters are the
component's data inputs and artifacts, then every flat field of its configs (`edgecompress.params`)
with the config's own default, so a setting cannot be written twice. The body hands everything to
the plain `run` function of the component's module, which the installed package provides in the
container. The generated source is registered with `linecache`, so `inspect.getsource` (and KFP)
read it like any other function's.
"""

from __future__ import annotations

import inspect
import linecache
import textwrap
from collections.abc import Callable, Sequence

from kfp import dsl

from edgecompress.params import surface
from edgecompress.settings import component_image

TYPE_SOURCE = {str: "str", int: "int", float: "float", bool: "bool", list: "list"}


def technique_component(
    name: str,
    run: Callable,
    *,
    inputs: dict[str, str] | None = None,
    outputs: dict[str, str] | None = None,
    surfaces: Sequence[type],
    optional_inputs: dict[str, str] | None = None,
    data: dict[str, str] | None = None,
    optional_data: dict[str, str] | None = None,
    returns: str | None = None,
    doc: str = "",
):
    """A KFP component `name` (a function of that name in the component's module calls `run`).

    `inputs`, `outputs`, `optional_inputs`: artifact name -> KFP artifact class (`Model`, `Dataset`,
    `HTML`, …); `data`: required non-artifact inputs (name -> type, e.g. a batch URI); `optional_data`:
    non-artifact inputs that default to None (e.g. results another task's output feeds); `surfaces`: the
    config dataclasses whose flat fields are the settings."""
    params = [f"{n}: {t}" for n, t in (data or {}).items()]
    params += [f"{n}: dsl.Input[dsl.{kind}]" for n, kind in (inputs or {}).items()]
    params += [f"{n}: dsl.Output[dsl.{kind}]" for n, kind in (outputs or {}).items()]
    params += [f"{n}: dsl.Input[dsl.{kind}] = None" for n, kind in (optional_inputs or {}).items()]
    params += [f"{n}: {t} = None" for n, t in (optional_data or {}).items()]
    seen: set[str] = set()
    for config in surfaces:
        for p in surface(config):
            if p.name in seen:
                raise ValueError(f"component {name}: setting {p.name!r} is defined by two of its configs")
            seen.add(p.name)
            params.append(f"{p.name}: {TYPE_SOURCE[p.type]} = {p.default!r}")
    module = run.__module__
    source = "\n".join(
        [
            f"def {name}(",
            *[f"    {p}," for p in params],
            f"){' -> ' + returns if returns else ''}:",
            textwrap.indent(f'"""{inspect.cleandoc(doc)}"""', "    ") if doc else "    pass",
            "    arguments = dict(locals())",
            f"    from {module} import {run.__name__}",
            "",
            f"    return {run.__name__}(**arguments)",
            "",
        ]
    )
    filename = f"<edgecompress component {name} from {module}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    namespace: dict[str, object] = {"dsl": dsl}
    # dont_inherit: this module's `from __future__ import annotations` would turn the types into strings
    exec(compile(source, filename, "exec", dont_inherit=True), namespace)  # noqa: S102 (our own source)
    func = namespace[name]
    func.__module__ = module
    if not hasattr(dsl, "component"):
        # Inside a running task KFP loads only its runtime (no decorator): the task imports this
        # module for `run`, and the function is all it needs.
        return func
    component = dsl.component(base_image=component_image(), install_kfp_package=False)(func)
    component.surfaces = tuple(surfaces)
    return component
