"""The plugin manager: entry-point group ``pilothouse`` plus modules named in settings.

Every plugin is loaded on its own, so one that fails to import or raises while
registering is reported with its name and the others still load.
"""

from __future__ import annotations

import importlib
import logging
import traceback
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy
from pydantic import BaseModel, ValidationError

from . import hookspecs
from .errors import PluginError
from .registry import Registry
from .settings import Settings
from .suggest import did_you_mean_among

log = logging.getLogger("pilothouse.plugins")

ENTRY_POINT_GROUP = "pilothouse"


@dataclass
class PluginInfo:
    """A plugin that was found: where it came from and whether it loaded."""

    name: str
    source: str  # "entry point <dist> <version>", "setting", or "object"
    module: str
    loaded: bool = True
    error: str | None = None
    registered: dict[str, list[str]] = field(default_factory=dict)
    #: the settings sections it registered
    sections: list[str] = field(default_factory=list)
    #: the commands it added to ``pilothouse``
    commands: list[str] = field(default_factory=list)


class Plugins:
    """Loads plugins into one pluggy manager and collects what they register."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}
        self.errors: list[PluginError] = []
        #: the settings sections, by name: (plugin, model class)
        self.sections: dict[str, tuple[str, type[BaseModel]]] = {}
        #: problems with the plugins' settings, one line each (a plugin with one did
        #: not load): a command that needs sound settings stops on them (exit 3)
        self.settings_errors: list[str] = []
        if settings.trace_hooks:
            self.pm.trace.root.setwriter(lambda msg: log.info("%s", msg.rstrip()))
            self.pm.enable_tracing()

    def load(self, extra: list[Any] = ()) -> None:  # type: ignore[assignment]
        """Load entry points, then setting-named modules, then ``extra`` plugin objects."""
        disabled = set(self.settings.disable_plugins)
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if ep.name in disabled or ep.name in self.info:
                continue
            dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "?"
            self._add(ep.name, f"entry point ({dist})", ep.value, ep.load)
        for module in self.settings.plugin_modules:
            if module not in disabled:
                self._add(module, "setting", module, lambda m=module: importlib.import_module(m))
        for obj in extra:
            name = getattr(obj, "__name__", None) or type(obj).__name__
            self._add(name, "object", name, lambda o=obj: o)

    def _add(self, name: str, source: str, module: str, loader: Any) -> None:
        info = PluginInfo(name=name, source=source, module=module)
        self.info[name] = info
        try:
            plugin = loader()
            self.pm.register(plugin, name=name)
        except Exception as exc:
            self._fail(info, f"failed to load: {type(exc).__name__}: {exc}")

    def _fail(self, info: PluginInfo, message: str, *, quiet: bool = False) -> None:
        info.loaded = False
        info.error = message
        error = PluginError(info.name, message)
        self.errors.append(error)
        if not quiet:
            log.warning("%s", error)

    def load_settings(self) -> None:
        """Call every plugin's ``register_settings`` and validate its sections of the
        workspace's configuration; a plugin whose settings are wrong does not load."""
        given = self.settings.plugins
        claimed: set[str] = set()
        for impl in self.pm.hook.register_settings.get_hookimpls():
            plugin = impl.plugin_name
            info = self.info.setdefault(plugin, PluginInfo(plugin, "", ""))
            if not info.loaded:
                continue
            registered: list[tuple[str, Any]] = []
            try:
                impl.function(register=lambda section, model, into=registered: into.append(
                    (section, model)
                ))  # fmt: skip
            except Exception as exc:
                detail = "".join(traceback.format_exception_only(exc)).strip()
                self._fail(info, f"register_settings raised {detail}")
                continue
            for section, model in registered:
                claimed.add(section)
                problem = self._section(plugin, section, model, given.get(section) or {})
                if problem is not None:
                    self.settings_errors.append(problem)
                    self._fail(info, problem, quiet=True)  # said once, by whoever stops on it
                    break
                info.sections.append(section)
        for section in sorted(set(given) - claimed):
            log.warning("[plugins.%s] in the settings: no plugin has that section%s",
                        section, did_you_mean_among(section, list(self.sections)))  # fmt: skip

    def _section(self, plugin: str, section: str, model: Any, values: Any) -> str | None:
        """Validate one section; the problem in one line, or None."""
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return f"plugin {plugin}: register_settings({section!r}, ...) needs a pydantic model"
        if section in self.sections and self.sections[section][0] != plugin:
            return f"plugin {plugin}: section [plugins.{section}] is {self.sections[section][0]}'s"
        if not isinstance(values, dict):
            values = {}
        try:
            instance = model.model_validate(values)
        except ValidationError as exc:
            err = exc.errors()[0]
            name = ".".join(str(p) for p in err["loc"]) or "(section)"
            where = self.settings.plugin_source(section, str(err["loc"][0]) if err["loc"] else "")
            hint = ""
            if err["type"] == "extra_forbidden":
                hint = did_you_mean_among(name, list(model.model_fields))
            more = len(exc.errors()) - 1
            also = f" (and {more} more)" if more else ""
            return (f"[plugins.{section}] {name} ({where}): {err['msg']}{hint}{also}"
                    f" (plugin {plugin} not loaded)")  # fmt: skip
        self.sections[section] = (plugin, model)
        self.settings._sections[section] = instance
        return None

    def load_commands(self, cli: Any) -> None:
        """Call every plugin's ``register_commands`` with the ``pilothouse`` group."""
        for impl in self.pm.hook.register_commands.get_hookimpls():
            plugin = impl.plugin_name
            info = self.info.setdefault(plugin, PluginInfo(plugin, "", ""))
            if not info.loaded:
                continue
            before = set(cli.commands)
            try:
                impl.function(cli=cli)
            except Exception as exc:
                detail = "".join(traceback.format_exception_only(exc)).strip()
                self._fail(info, f"register_commands raised {detail}")
            info.commands = sorted(set(cli.commands) - before)

    def collect(self) -> Registry:
        """Call every plugin's ``register_*`` hooks, one plugin at a time."""
        registry = Registry()
        for kind in Registry.KINDS:
            caller = getattr(self.pm.hook, f"register_{kind}")
            # get_hookimpls() lists plugins in registration order: first loaded, first served.
            for impl in caller.get_hookimpls():
                plugin = impl.plugin_name
                if not self.info.get(plugin, PluginInfo(plugin, "", "")).loaded:
                    continue
                args = {"register": registry.registrar(kind, plugin), "settings": self.settings}
                try:
                    impl.function(**{a: args[a] for a in impl.argnames})
                except PluginError as exc:
                    self._fail(
                        self.info.setdefault(plugin, PluginInfo(plugin, "", "")), exc.message
                    )
                except Exception as exc:
                    detail = "".join(traceback.format_exception_only(exc)).strip()
                    detail = f"register_{kind} raised {detail}"
                    self._fail(self.info.setdefault(plugin, PluginInfo(plugin, "", "")), detail)
        for name, registered in registry.by_plugin().items():
            if name in self.info:
                self.info[name].registered = registered
        return registry

    def observers(self) -> list[tuple[str, Any]]:
        """The ``on_event`` implementations, each with its plugin's name."""
        return [
            (impl.plugin_name, impl.function)
            for impl in self.pm.hook.on_event.get_hookimpls()
            if self.info.get(impl.plugin_name) is None or self.info[impl.plugin_name].loaded
        ]
