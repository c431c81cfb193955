"""Settings: ``PILOTHOUSE_*`` environment variables over ``pilothouse.toml`` over defaults.

Two TOML files are read when present: ``./pilothouse.toml`` (the project) and
``<workspace>/pilothouse.toml`` (the workspace, which wins). Each setting
remembers where its value came from, for ``pilothouse config``.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from .errors import ConfigError
from .suggest import closest, did_you_mean

ENV_PREFIX = "PILOTHOUSE_"
CONFIG_FILE = "pilothouse.toml"


def _compiles(patterns: list[str]) -> list[str]:
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from exc
    return patterns


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


NameList = Annotated[list[str], NoDecode, BeforeValidator(_split_commas)]
PathList = Annotated[list[Path], NoDecode, BeforeValidator(_split_commas)]

_file_data: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "pilothouse_file_settings", default=None
)
#: the notices of the settings being loaded (see ``Settings._moved``)
_notices_now: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "pilothouse_settings_notices", default=None
)
_MODULES_MOVED = (
    "the setting 'plugins' now holds plugins' own settings sections: the modules it named"
    " are loaded from 'plugin_modules' (PILOTHOUSE_PLUGIN_MODULES)"
)
#: settings that moved into their plugin's section: old key -> (section, key)
MOVED: dict[str, tuple[str, str]] = {
    "offline_delay_ms": ("offline", "delay_ms"),
    "grounded_embedder": ("guardrails", "grounded_embedder"),
    "grounded_judge": ("guardrails", "grounded_judge"),
    "otel": ("otel", "export"),
}


class _FileSource(PydanticBaseSettingsSource):
    """The merged ``pilothouse.toml`` files, read by :func:`load_settings`."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return (_file_data.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_file_data.get() or {})


class Endpoint(BaseModel):
    """A model server: its URL, key and the limits pilothouse keeps to when calling it.

    Personas name its models as ``<endpoint name>:<model>``, e.g. ``local:llama3``.
    """

    model_config = {"extra": "forbid"}

    #: the provider plugin that speaks to it
    provider: str = "openai"
    base_url: str = "https://api.openai.com/v1"
    api_key: SecretStr | None = None
    #: read the key from this environment variable when ``api_key`` is not set
    api_key_env: str | None = None
    #: model used when a persona names only the endpoint
    default_model: str | None = None
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=4, ge=0)
    #: requests in flight at once (a thousand runs do not stampede one server)
    max_concurrency: int = Field(default=32, gt=0)
    requests_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_minute: int | None = Field(default=None, gt=0)
    #: stream replies: token deltas reach observers (the monitor shows text as it
    #: comes) and time to first token is measured, at more client CPU per call
    stream: bool = False
    headers: dict[str, str] = Field(default_factory=dict)
    #: the request field of the output token limit. OpenAI's own API wants
    #: ``max_completion_tokens`` (its reasoning models refuse ``max_tokens``); the
    #: servers people run (vLLM, Ollama, llama.cpp, LM Studio) read ``max_tokens``.
    #: Unset: the first for api.openai.com, the second elsewhere.
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] | None = None
    #: how a persona's output schema is asked for: OpenAI's ``json_schema`` response
    #: format, ``json_object`` with the schema beside it (llama.cpp), a forced ``tool``
    #: call, or the schema in the ``prompt`` (the reply checked, one repair round).
    #: ``auto`` starts with ``json_schema`` and falls back in that order when the
    #: server refuses it, remembering per model what worked.
    structured_output: Literal["auto", "json_schema", "json_object", "tool", "prompt"] = "auto"

    def token_limit_field(self) -> str:
        """The field a request's output token limit goes in (see ``max_tokens_field``)."""
        if self.max_tokens_field is not None:
            return self.max_tokens_field
        host = urlsplit(self.base_url).hostname or ""
        return "max_completion_tokens" if host == "api.openai.com" else "max_tokens"

    def key(self) -> str | None:
        """The API key, from ``api_key`` or the variable ``api_key_env`` names."""
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def shown_url(self) -> str:
        """``base_url`` as messages and ``pilothouse config`` may show it."""
        return shown_url(self.base_url)

    def secrets(self) -> list[str]:
        """Every secret this endpoint holds, for cutting out of any text it produces: the
        key, a password in the URL, secret query values and secret header values."""
        found = [self.key(), urlsplit(self.base_url).password]
        found += [value for name, value in _query(self.base_url) if is_secret_name(name)]
        found += [value for name, value in self.headers.items() if is_secret_name(name)]
        return sorted({s for s in found if s}, key=len, reverse=True)


class Price(BaseModel):
    """What a model costs, in USD per million tokens."""

    model_config = {"extra": "forbid"}

    input: float = Field(ge=0)
    output: float = Field(ge=0)


class Budget(BaseModel):
    """What a crew may spend in a day (UTC) before ``pilothouse metrics`` raises an alert."""

    model_config = {"extra": "forbid"}

    cost_usd_per_day: float | None = Field(default=None, gt=0)
    tokens_per_day: int | None = Field(default=None, gt=0)


class Settings(BaseSettings):
    """Everything that can be configured. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", env_nested_delimiter="__"
    )

    workspace: Path = Field(
        default=Path(".pilothouse"), description="Folder holding the run store and config."
    )
    store: str = Field(
        default="runs.db", description="Run store file name, relative to the workspace."
    )
    store_url: str | None = Field(
        default=None,
        description="A PostgreSQL URL (postgresql://user:password@host/db) for a run store"
        " many workers share; unset: the workspace's SQLite file.",
    )
    store_timeout_s: float = Field(
        default=15.0,
        gt=0,
        description="PostgreSQL: a statement or a connection the server has not answered"
        " within this many seconds is given up as lost (a partition is noticed in that time).",
    )
    store_outage_s: float = Field(
        default=300.0,
        ge=0,
        description="How long a run waits for an unreachable run store (server down, file"
        " locked, disk full), holding its finished step, before it is suspended for any"
        " worker to resume.",
    )
    synchronous: Literal["normal", "full"] = Field(
        default="normal",
        description="SQLite durability: 'normal' survives a killed process, 'full' a power cut.",
    )
    default_model: str = Field(
        default="offline",
        description="Model used by personas that name none: an alias or provider:model.",
    )
    model_aliases: dict[str, str] = Field(
        default_factory=dict,
        description="Short names for models, e.g. fast = 'openai:gpt-4o-mini'.",
    )
    plugin_modules: NameList = Field(
        default_factory=list,
        description="Extra plugin modules to load (not installed packages), comma-separated.",
    )
    plugins: Annotated[dict[str, Any], NoDecode] = Field(
        default_factory=dict,
        description="Plugins' own settings, a section each: [plugins.NAME] in the file,"
        " PILOTHOUSE_PLUGINS__NAME__FIELD in the environment (see pilothouse plugins).",
    )
    disable_plugins: NameList = Field(
        default_factory=list, description="Plugins (entry-point names) not to load."
    )
    crew_paths: PathList = Field(
        default_factory=lambda: [Path("crews")],
        description="Folders searched for TOML crew files (plus <workspace>/crews).",
    )
    trace_hooks: bool = Field(default=False, description="Log every plugin hook call.")
    decider: str | None = Field(
        default=None, description="Name recorded with your decisions (default: your OS user)."
    )
    redact_patterns: Annotated[list[str], AfterValidator(_compiles)] = Field(
        default_factory=list,
        description="Extra regular expressions cut out of the monitor and the portal.",
    )
    redact_emails: bool = Field(
        default=False, description="Also cut e-mail addresses out of the monitor and the portal."
    )
    knowledge_index_from: int = Field(
        default=10_000,
        ge=1,
        description="Chunks from which a knowledge-base collection gets an approximate vector"
        " index (HNSW, usearch); below it, search scans every vector exactly.",
    )
    endpoints: dict[str, Endpoint] = Field(
        default_factory=dict,
        description="Model servers by name ([endpoints.NAME] in pilothouse.toml).",
    )
    budgets: dict[str, Budget] = Field(
        default_factory=dict, description="Daily budgets by crew ([budgets.CREW])."
    )
    prices: dict[str, Price] = Field(
        default_factory=dict,
        description="USD per million tokens by model name, over the built-in table.",
    )

    _sources: dict[str, str] = PrivateAttr(default_factory=dict)
    #: one line each about a setting read from where it used to be
    _notices: list[str] = PrivateAttr(default_factory=list)
    #: the plugins' sections, validated by the models they registered
    _sections: dict[str, BaseModel] = PrivateAttr(default_factory=dict)
    #: where each plugin setting came from: (section, key) -> source
    _plugin_sources: dict[tuple[str, str], str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any) -> Any:
        """Settings that moved keep working from their old place, with a notice: the
        modules of ``plugins = [...]`` (now ``plugin_modules``) and the keys that moved to
        their plugin's section (:data:`MOVED`)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        notices = _notices_now.get()
        if notices is None:
            notices = []
        plugins = data.get("plugins")
        if isinstance(plugins, dict) and "__modules__" in plugins:  # see load_settings
            plugins = {**plugins}
            data["plugin_modules"] = [*_split_commas(plugins.pop("__modules__")),
                                      *data.get("plugin_modules", [])]  # fmt: skip
            data["plugins"] = plugins
            notices.append(_MODULES_MOVED)
        elif isinstance(plugins, str | list):
            data["plugin_modules"] = [*_split_commas(plugins), *data.get("plugin_modules", [])]
            data["plugins"] = {}
            notices.append(_MODULES_MOVED)
        sections = data.setdefault("plugins", {})
        if not isinstance(sections, dict):
            return data
        for old, (section, key) in MOVED.items():
            if old not in data:
                continue
            value = data.pop(old)
            sections = data["plugins"] = {**sections}
            sections[section] = {**sections.get(section, {})}
            sections[section].setdefault(key, value)
            notices.append(
                f"the setting '{old}' is now '{key}' in [plugins.{section}]"
                f" (PILOTHOUSE_PLUGINS__{section.upper()}__{key.upper()}): read from '{old}'"
            )
        return data

    def plugin_source(self, section: str, key: str) -> str:
        """Where a plugin setting's value came from (for messages and ``pilothouse
        config``): an environment variable, a file, or the default."""
        return self._plugin_sources.get((section, key), "default")

    def sections(self) -> dict[str, Any]:
        """Every plugin's settings, by section (those of the plugins loaded)."""
        return dict(self._sections)

    def section(self, name: str) -> Any:
        """A plugin's settings: the model it registered for section ``name``
        (``register_settings``), validated, with the defaults where nothing was set."""
        try:
            return self._sections[name]
        except KeyError:
            known = ", ".join(sorted(self._sections)) or "none"
            raise ConfigError(f"no plugin settings section {name!r} (sections: {known})") from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _FileSource(settings_cls))

    @property
    def store_path(self) -> Path:
        """The run store's file."""
        return self.workspace / self.store

    def source_of(self, name: str) -> str:
        """Where a setting's value came from: an argument, an env var, a file or the default."""
        return self._sources.get(name, "default")

    def describe(self) -> list[dict[str, str]]:
        """Every setting with its value as TOML writes it (secrets masked) and its
        source; a setting left unset says what takes its place."""
        rows = []
        for name in type(self).model_fields:
            if name == "plugins":
                rows += self._describe_sections()
                continue
            value = getattr(self, name)
            source = self.source_of(name)
            shown = mask(name, value)
            if value is None and name in _WHEN_UNSET:
                shown = _WHEN_UNSET[name](self)
            elif name == "decider" and value is None:
                shown, source = toml_value(self.effective_decider()), "default: your OS user"
            rows.append({"name": name, "value": shown, "source": source})
        return rows

    def _describe_sections(self) -> list[dict[str, str]]:
        """A row for every field of every plugin's section (``plugins.NAME.FIELD``), and
        for a section the settings give that no loaded plugin took."""
        rows = []
        for section, values in sorted(self._sections.items()):
            for key in type(values).model_fields:
                rows.append({"name": f"plugins.{section}.{key}",
                             "value": mask(key, getattr(values, key)),
                             "source": self.plugin_source(section, key)})  # fmt: skip
        for section in sorted(set(self.plugins) - set(self._sections)):
            value = mask(section, self.plugins[section])
            rows.append({"name": f"plugins.{section}", "value": value,
                         "source": "no plugin loaded takes this section"})  # fmt: skip
        return rows

    def effective_decider(self) -> str:
        """The name decisions made here are recorded under: ``decider``, or the user this
        process runs as."""
        if self.decider:
            return self.decider
        import getpass

        try:
            return getpass.getuser()
        except Exception:  # no user database entry (containers)
            return "unknown"


#: what stands in for a setting left unset, as ``pilothouse config`` says it
_WHEN_UNSET: dict[str, Callable[[Settings], str]] = {
    "store_url": lambda s: f"(unset: the SQLite file {s.store_path})",
    "grounded_embedder": lambda s: "(unset: words only)",
    "grounded_judge": lambda s: "(unset: no judge)",
}


_SECRET_WORDS = frozenset(
    {"key", "apikey", "token", "secret", "password", "authorization", "sig", "signature"}
)
MASK = "********"


def is_secret_name(name: str) -> bool:
    """Whether a setting, header or query parameter of this name holds a secret."""
    return bool(_SECRET_WORDS & set(name.lower().replace("-", "_").split("_")))


def _query(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


def shown_url(url: str) -> str:
    """A URL as it may be shown: a password in it and the values of secret query
    parameters (``?api-key=...``, ``?sig=...``) are masked."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password:
        netloc = f"{parts.username}:{MASK}@{netloc.rpartition('@')[2]}"
    query = "&".join(
        f"{name}={MASK if is_secret_name(name) else value}" for name, value in _query(url)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def mask(name: str, value: Any) -> str:
    """A setting's value as TOML writes it (``true``, ``"offline"``, ``["crews"]``,
    ``{ input = 0.5 }``), never a secret's: a secret is shown as its mask."""
    if name.endswith("_env") and isinstance(value, str):
        return toml_value(value)  # the name of a variable, not its value
    if isinstance(value, SecretStr) or is_secret_name(name):
        return toml_value(MASK if value else "")
    if name.endswith("url") and isinstance(value, str):
        return toml_value(shown_url(value))
    if isinstance(value, BaseModel):
        value = value.model_dump(exclude_defaults=True)
    if isinstance(value, dict):
        inner = ", ".join(f"{_toml_key(k)} = {mask(k, v)}" for k, v in value.items())
        return f"{{ {inner} }}" if inner else "{}"
    return toml_value(value)


def toml_value(value: Any) -> str:
    """A plain value as TOML writes it (None, which TOML has not, as ``(unset)``)."""
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None


def _env_value(name: str) -> str | None:
    wanted = (ENV_PREFIX + name).upper()
    for key, value in os.environ.items():
        if key.upper() == wanted or key.upper().startswith(wanted + "__"):
            return value
    return None


def _nested_env(name: str) -> dict[str, Any]:
    """``PILOTHOUSE_NAME__A__B=v`` variables as ``{"a": {"b": "v"}}``."""
    head = f"{ENV_PREFIX}{name.upper()}__"
    nested: dict[str, Any] = {}
    for key, value in os.environ.items():
        if key.upper().startswith(head):
            *path, last = key[len(head) :].lower().split("__")
            at = nested
            for part in path:
                at = at.setdefault(part, {})
            at[last] = value
    return nested


def _check_environment() -> None:
    """A ``PILOTHOUSE_*`` variable that names no setting is an error, as an unknown key in
    a file is: a misspelt variable would otherwise be ignored without a word."""
    for key in sorted(os.environ):
        if not key.upper().startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].split("__")[0].lower()
        if name in Settings.model_fields or name in MOVED:
            continue
        close = closest(name, Settings.model_fields)
        hint = f"; did you mean {ENV_PREFIX}{close.upper()}?" if close else ""
        raise ConfigError(f"invalid settings: {key} (env) is not a setting of pilothouse{hint}")


def load_settings(**overrides: Any) -> Settings:
    """Build the effective settings; raise :class:`ConfigError` naming the bad key and source."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    workspace = Path(overrides.get("workspace") or _env_value("workspace") or ".pilothouse")
    file_data: dict[str, Any] = {}
    origins: dict[str, str] = {}
    plugin_sources: dict[tuple[str, str], str] = {}
    for path in (Path(CONFIG_FILE), workspace / CONFIG_FILE):
        if path.is_file():
            data = _read_toml(path)
            for old, (section, key) in MOVED.items():
                if old in data:
                    plugin_sources[(section, key)] = f"{path} ({old})"
            sections = data.get("plugins")
            if isinstance(sections, dict):
                for section, values in sections.items():
                    for key in values if isinstance(values, dict) else ():
                        plugin_sources[(section, key)] = str(path)
                # sections merge key by key across the files, as the environment's do
                merged = dict(file_data.get("plugins") or {})
                for section, values in sections.items():
                    old = merged.get(section)
                    both = isinstance(old, dict) and isinstance(values, dict)
                    merged[section] = {**old, **values} if both else values
                data = {**data, "plugins": merged}
            file_data.update(data)
            origins.update({key: str(path) for key in data})
    sources = {}
    for name in Settings.model_fields:
        if name in overrides:
            sources[name] = "argument"
        elif _env_value(name) is not None:
            sources[name] = f"env {ENV_PREFIX}{name.upper()}"
        elif name in file_data:
            sources[name] = origins[name]
    _check_environment()
    modules = os.environ.get(ENV_PREFIX + "PLUGINS")
    if modules is not None and "plugins" not in overrides:
        # the old form (modules to load) beside the new sections: pydantic would read
        # only one of them, so both are taken here, the sections as they would be read
        overrides["plugins"] = {"__modules__": modules, **_nested_env("plugins")}
        sources["plugins"] = f"env {ENV_PREFIX}PLUGINS"
    for old, (section, key) in MOVED.items():  # read as its old key (the new place wins)
        value = os.environ.get(ENV_PREFIX + old.upper())
        if value is not None and old not in overrides:
            overrides[old] = value
            sources.setdefault("plugins", f"env {ENV_PREFIX}{old.upper()}")
            plugin_sources[(section, key)] = f"env {ENV_PREFIX}{old.upper()}"
    for section, values in _nested_env("plugins").items():
        for key in values if isinstance(values, dict) else ():
            plugin_sources[(section, key)] = (
                f"env {ENV_PREFIX}PLUGINS__{section.upper()}__{key.upper()}"
            )
    token = _file_data.set(file_data)
    notices: list[str] = []
    said = _notices_now.set(notices)
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = str(err["loc"][0]) if err["loc"] else "(settings)"
            where = sources.get(key) or origins.get(key) or "?"
            # the whole path names the field: endpoints.local.max_concurrency
            dotted = ".".join(str(part) for part in err["loc"]) or key
            hint = ""
            if err["type"] == "extra_forbidden":
                hint = did_you_mean(dotted.rsplit(".", 1)[-1], Settings)
            problems.append(f"{dotted} ({where}): {err['msg']}{hint}")
        raise ConfigError("invalid settings: " + "; ".join(problems)) from None
    finally:
        _file_data.reset(token)
        _notices_now.reset(said)
    settings._sources = sources
    settings._notices = notices
    settings._plugin_sources = plugin_sources
    for notice in notices:
        if notice not in _SAID:  # once per process, however often settings are loaded
            _SAID.add(notice)
            logging.getLogger("pilothouse.settings").warning("%s", notice)
    return settings


#: the notices already said in this process
_SAID: set[str] = set()
