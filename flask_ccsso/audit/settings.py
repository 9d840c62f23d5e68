"""Parse the ``logging`` config block into frozen :class:`AuditSettings`.

The usual keys keep their meaning (``level``, ``destination``, ``events``,
``includeUserClaims``, ``includeGroupMemberships``); the rest are documented in
``docs/audit.md``. Every mistake is a :class:`~flask_ccsso.exceptions.ConfigError`
naming the exact key and the fix. ``${VAR}`` interpolation has already happened
when this runs.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from .._validate import (
    check_keys,
    config_keys,
    expect,
    expect_str_list,
    join,
    mask_url,
    parse_struct,
    read_settings,
    setting,
)
from ..exceptions import ConfigError
from ..stores.database import resolve_database_url
from .events import OUTCOMES

LEVELS = ("audit", "debug", "off")
SINK_TYPES = ("sqlalchemy", "http", "logging")
HTTP_FORMATS = ("json", "splunk-hec", "azure-monitor")
#: values of the single ``destination`` of the usual ``logging`` block
DESTINATIONS = ("azure-log-analytics", "logging")

KNOWN_EVENTS = tuple(OUTCOMES)
DEFAULT_EVENTS = tuple(e for e in KNOWN_EVENTS if e != "skill.invoked")
DEFAULT_TABLE = "ccsso_audit_events"
AZURE_TOKEN_URL = "https://login.microsoftonline.com/{tenantId}/oauth2/v2.0/token"
AZURE_API_VERSION = "2023-01-01"

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

_AZURE_KEYS = ("endpoint", "dcrImmutableId", "streamName", "tenantId", "clientId", "clientSecret", "tokenUrl",
               "scope")
_AZURE_REQUIRED = ("endpoint", "dcrImmutableId", "streamName", "clientId", "clientSecret")
_COMMON_SINK_KEYS = ("type", "name")


def _read_count(raw: Mapping[str, Any], key: str, path: str, default: Any, meta: Mapping[str, Any]) -> Any:
    """A JSON integer (not ``5.0``) of at least the field's ``minimum``."""
    return _int(raw, key, path, default, meta.get("minimum", 1))


def _one_of(choices: tuple[str, ...]) -> Any:
    def read(raw: Mapping[str, Any], key: str, path: str, default: Any, meta: Mapping[str, Any]) -> Any:
        return _choice(raw, key, choices, path, default)
    return read


def _read_verify(raw: Mapping[str, Any], key: str, path: str, default: Any, meta: Mapping[str, Any]) -> Any:
    return expect(raw, key, (bool, str), path, default)


@dataclass(frozen=True)
class AzureMonitorSettings:
    """Where and how to reach the Azure Monitor Logs Ingestion API."""

    endpoint: str = setting("endpoint")
    dcr_immutable_id: str = setting("dcrImmutableId")
    stream_name: str = setting("streamName")
    client_id: str = setting("clientId")
    client_secret: str = setting("clientSecret", secret=True)
    token_url: str = setting("tokenUrl")
    scope: str = setting("scope", "https://monitor.azure.com/.default")

    @property
    def ingestion_url(self) -> str:
        return (f"{self.endpoint.rstrip('/')}/dataCollectionRules/{self.dcr_immutable_id}"
                f"/streams/{self.stream_name}?api-version={AZURE_API_VERSION}")


@dataclass(frozen=True)
class SinkSettings:
    """One destination. Only the fields of its ``type`` are meaningful."""

    type: str
    name: str
    url: str | None = setting("url", None, url=True)  # may embed a password
    # sqlalchemy
    table: str = setting("table", DEFAULT_TABLE)
    create_table: bool = setting("createTable", True)
    # http
    format: str = setting("format", "json", read=_one_of(HTTP_FORMATS))
    token: str | None = setting("token", None, secret=True)
    headers: Mapping[str, str] = setting("headers", default_factory=dict, secret=True)  # credentials, often
    connect_timeout: float = setting("connectTimeout", 3.05)
    read_timeout: float = setting("readTimeout", 4.0)  # below the 5 s shutdown budget
    verify: bool | str = setting("verify", True, read=_read_verify)
    max_batch_bytes: int = setting("maxBatchBytes", 900_000, minimum=1024, read=_read_count)
    sourcetype: str = setting("sourcetype", "ccsso:audit")
    index: str | None = setting("index", None)
    source: str | None = setting("source", None)
    host: str | None = setting("host", None)
    azure: AzureMonitorSettings | None = None
    # logging
    logger: str = setting("logger", "flask_ccsso.audit")
    #: the level of the logging sink's records: INFO, or WARNING for the Azure
    #: fallback (``destination: "azure-log-analytics"`` without ``azureMonitor``;
    #: a plain Flask app shows WARNING and up, so the events that were meant for
    #: Azure appear in the app's log instead of nowhere)
    log_level: int = logging.INFO

    @property
    def config_keys(self) -> tuple[str, ...]:
        """The keys of this sink's type, as written in ``destinations`` (check-config shows these)."""
        return ("type", "name", *(_SINK_KEY[n] for n in _SINK_FIELDS[self.type]))

    def describe(self) -> str:
        """Where this sink sends events, in words, credentials masked: the
        start-up line and ``flask ccsso check-config`` say it."""
        if self.type == "logging":
            return f"the Python logger {self.logger!r} at {logging.getLevelName(self.log_level)} (sink {self.name!r})"
        if self.type == "sqlalchemy":
            return f"the database {mask_url(self.url or '')} table {self.table} (sink {self.name!r})"
        what = "Azure Monitor (Logs Ingestion API)" if self.format == "azure-monitor" else f"{self.format} over HTTP"
        return f"{what} at {mask_url(self.url or '')} (sink {self.name!r})"


#: the fields of :class:`SinkSettings` each sink type reads
_SINK_FIELDS = {
    "sqlalchemy": ("url", "table", "create_table"),
    "http": ("url", "format", "token", "headers", "connect_timeout", "read_timeout", "verify", "max_batch_bytes",
             "sourcetype", "index", "source", "host"),
    "logging": ("logger",),
}
_SINK_KEY = {f.name: f.metadata["key"] for f in fields(SinkSettings) if "key" in f.metadata}
#: the keys each sink type accepts (an http sink in the azure-monitor format takes the azureMonitor keys too)
_SINK_KEYS = {kind: tuple(_SINK_KEY[n] for n in names) + (_AZURE_KEYS if kind == "http" else ())
              for kind, names in _SINK_FIELDS.items()}


@dataclass(frozen=True)
class FailureThresholdSettings:
    count: int = setting("count", 5, read=_read_count)
    window: float = setting("window", 300.0)


def _read_events(raw: Mapping[str, Any], key: str, path: str, default: Any, meta: Mapping[str, Any]) -> Any:
    events = expect_str_list(raw, key, path, tuple(default))
    for i, name in enumerate(events):
        if name not in KNOWN_EVENTS:
            close = difflib.get_close_matches(name, KNOWN_EVENTS, n=1, cutoff=0.6)
            fix = f"did you mean '{close[0]}'?" if close else f"known events: {', '.join(KNOWN_EVENTS)}."
            raise ConfigError(join(join(path, key), i), f"unknown event {name!r}.", fix)
    return frozenset(events)


def _read_threshold(raw: Mapping[str, Any], key: str, path: str, default: Any, meta: Mapping[str, Any]) -> Any:
    """An object, or ``false`` to turn the alert off."""
    if raw.get(key) is False:
        return None
    block = expect(raw, key, dict, path, None, fix='write it as {"count": 5, "window": 300}, or false to turn it off.')
    return default if block is None else parse_struct(FailureThresholdSettings, block, join(path, key))


@dataclass(frozen=True)
class AuditSettings:
    """The parsed ``logging`` block."""

    level: str = setting("level", "audit", read=_one_of(LEVELS))
    events: frozenset[str] = setting("events", frozenset(DEFAULT_EVENTS), read=_read_events)
    include_user_claims: bool = setting("includeUserClaims", False)
    include_group_memberships: bool = setting("includeGroupMemberships", False)
    destinations: tuple[SinkSettings, ...] = ()
    spool_dir: str | None = setting("spoolDir", None)
    queue_size: int = setting("queueSize", 10_000, read=_read_count)
    batch_size: int = setting("batchSize", 100, read=_read_count)
    flush_interval: float = setting("flushInterval", 1.0)
    failure_threshold: FailureThresholdSettings | None = setting(  # noqa: RUF009 - a field specifier
        "failureThreshold", default_factory=FailureThresholdSettings, read=_read_threshold)
    retry_attempts: int = setting("retryAttempts", 3, read=_read_count)
    retry_backoff: float = setting("retryBackoff", 0.5, allow_zero=True)
    max_backoff: float = setting("maxBackoff", 15.0)
    max_field_length: int = setting("maxFieldLength", 1024, minimum=64, read=_read_count)
    #: events kept in memory per sink while the sink is down *and* its spool cannot be written
    backlog_size: int = setting("backlogSize", 10_000, minimum=0, read=_read_count)
    #: things worth one warning at start-up (e.g. the Azure fallback)
    notices: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return self.level != "off"

    def records(self, event_type: str) -> bool:
        """Whether an event of this type is written at the configured level."""
        if self.level == "off":
            return False
        if self.level == "debug":
            return True
        if event_type == "auth.failure_threshold" and self.failure_threshold is not None:
            return True
        return event_type in self.events

    @property
    def database_url(self) -> str | None:
        """The first ``sqlalchemy`` destination's URL (used by ``flask ccsso audit``)."""
        for sink in self.destinations:
            if sink.type == "sqlalchemy":
                return sink.url
        return None

    @property
    def database_table(self) -> str:
        for sink in self.destinations:
            if sink.type == "sqlalchemy":
                return sink.table
        return DEFAULT_TABLE

    def resolved(self, instance_path: str) -> AuditSettings:
        """These settings with their paths made absolute against the app's
        instance folder: each ``sqlalchemy`` destination's SQLite URL
        (``{instance}`` and relative paths, :func:`~flask_ccsso.stores.database.resolve_database_url`)
        and a relative ``spoolDir``. So where the audit database and spool
        live never depends on the directory a process was started from."""
        sinks = tuple(
            replace(sink, url=resolve_database_url(sink.url, instance_path, key=f"logging.destinations.{sink.name}.url"))
            if sink.type == "sqlalchemy" and sink.url else sink for sink in self.destinations)
        spool = self.spool_dir
        if spool and not os.path.isabs(spool):
            spool = os.path.join(os.path.abspath(instance_path), spool)
        return replace(self, destinations=sinks, spool_dir=spool)


def _choice(raw: Mapping[str, Any], key: str, choices: tuple[str, ...], path: str, default: str) -> str:
    value: str = expect(raw, key, str, path, default)
    if value not in choices:
        close = difflib.get_close_matches(value, choices, n=1, cutoff=0.5)
        fix = f"did you mean '{close[0]}'?" if close else f"use one of: {', '.join(choices)}."
        raise ConfigError(join(path, key), f"unknown value {value!r}.", fix)
    return value


def _int(raw: Mapping[str, Any], key: str, path: str, default: int, minimum: int = 1) -> int:
    value = expect(raw, key, int, path, default)
    if value < minimum:
        raise ConfigError(join(path, key), f"must be at least {minimum}, not {value}.",
                          f"set '{key}' to {minimum} or more.")
    return int(value)


def _azure(raw: Mapping[str, Any], path: str) -> AzureMonitorSettings:
    for key in _AZURE_REQUIRED:
        env = "AZURE_" + re.sub(r"(?<!^)([A-Z])", r"_\1", key).upper()
        expect(raw, key, str, path, required=True,
               fix=f"set '{key}' (e.g. \"${{{env}}}\"); see docs/audit.md, 'Azure Monitor'.")
        if not raw[key].strip():
            raise ConfigError(join(path, key), "is empty.", f"set '{key}' (is its environment variable empty?).")
    endpoint = raw["endpoint"]
    if not endpoint.startswith(("https://", "http://")):
        raise ConfigError(join(path, "endpoint"), "must be an http(s) URL.",
                          "use the data collection endpoint's Logs Ingestion URL, "
                          "e.g. https://my-dce-abcd.westeurope-1.ingest.monitor.azure.com.")
    tenant = expect(raw, "tenantId", str, path)
    token_url = expect(raw, "tokenUrl", str, path)
    if token_url is None:
        if not tenant:
            raise ConfigError(join(path, "tenantId"), "is required when 'tokenUrl' is not set.",
                              "set 'tenantId' (the Entra ID tenant of the app registration) or 'tokenUrl'.")
        token_url = AZURE_TOKEN_URL.format(tenantId=tenant)
    return AzureMonitorSettings(
        endpoint=endpoint, dcr_immutable_id=raw["dcrImmutableId"], stream_name=raw["streamName"],
        client_id=raw["clientId"], client_secret=raw["clientSecret"], token_url=token_url,
        **read_settings(AzureMonitorSettings, raw, path, only=("scope",)),
    )


def _sink(raw: Any, path: str, index: int, taken: set[str]) -> SinkSettings:
    if not isinstance(raw, Mapping):
        raise ConfigError(path, f"must be an object, not {type(raw).__name__}.",
                          'write a sink as {"type": "sqlalchemy", "url": "..."}.')
    kind = _choice(raw, "type", SINK_TYPES, path, "") if "type" in raw else None
    if kind is None:
        raise ConfigError(join(path, "type"), "is required.", f"set 'type' to one of: {', '.join(SINK_TYPES)}.")
    check_keys(raw, _COMMON_SINK_KEYS + _SINK_KEYS[kind], path)
    name = expect(raw, "name", str, path, kind if kind not in taken else f"{kind}-{index}")
    if not _NAME.match(name):
        raise ConfigError(join(path, "name"), f"{name!r} is not a usable name.",
                          "use 1-64 letters, digits, '-' or '_' (it names the spool file).")
    if kind == "logging":
        return SinkSettings(type=kind, name=name, **read_settings(SinkSettings, raw, path, only=_SINK_FIELDS[kind]))
    if kind == "sqlalchemy":
        expect(raw, "url", str, path, required=True,
               fix="set 'url' to a SQLAlchemy URL, e.g. \"postgresql+psycopg://audit@db/audit\" "
                   "or \"sqlite:////var/lib/app/audit.db\".")
        values = read_settings(SinkSettings, raw, path, only=_SINK_FIELDS[kind])
        if not _TABLE.match(values["table"]):
            raise ConfigError(join(path, "table"), f"{values['table']!r} is not a plain SQL identifier.",
                              "use letters, digits and '_' only.")
        return SinkSettings(type=kind, name=name, **values)
    values = read_settings(SinkSettings, raw, path, only=_SINK_FIELDS[kind])
    fmt = values["format"]
    azure = None
    url = values.pop("url")
    if fmt == "azure-monitor":
        azure = _azure(raw, path)
        url = azure.ingestion_url
    elif url is None:
        raise ConfigError(join(path, "url"), "is required.",
                          "set 'url' to the collector endpoint, e.g. "
                          "\"https://splunk:8088/services/collector/event\".")
    if not url.startswith(("https://", "http://")):
        raise ConfigError(join(path, "url"), "must be an http(s) URL.", "start the URL with https://.")
    if fmt == "splunk-hec" and not values["token"]:
        raise ConfigError(join(path, "token"), "is required for the Splunk HEC format.",
                          'set \'token\' to the HEC token, e.g. "${SPLUNK_HEC_TOKEN}".')
    for hk, hv in values["headers"].items():
        if not isinstance(hv, str):
            raise ConfigError(join(join(path, "headers"), hk), "must be a string.", "quote the header value.")
    return SinkSettings(type=kind, name=name, url=url, azure=azure, **values)


def parse_logging_block(raw: Mapping[str, Any] | None, path: str = "logging") -> AuditSettings:
    """Validate the ``logging`` block and return frozen :class:`AuditSettings`.

    ``None`` (no block) gives the defaults: level ``audit``, the logging sink.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(path, f"must be an object, not {type(raw).__name__}.",
                          'write it as {"level": "audit", ...}.')
    check_keys(raw, (*config_keys(AuditSettings), "destination", "destinations", "azureMonitor"), path)
    values = read_settings(AuditSettings, raw, path)

    notices: list[str] = []
    sinks: list[SinkSettings] = []
    destination = expect(raw, "destination", str, path)
    if destination is not None:
        _choice(raw, "destination", DESTINATIONS, path, "")
        if destination == "azure-log-analytics":
            azure_raw = expect(raw, "azureMonitor", dict, path)
            if azure_raw is None:
                if "destinations" not in raw:
                    # WARNING, not INFO: the events must show where the app's log is
                    sinks.append(SinkSettings(type="logging", name="logging", log_level=logging.WARNING))
                notices.append(
                    f"{path}.destination is 'azure-log-analytics' but {path}.azureMonitor is not set; "
                    + ("audit events go to the 'destinations' listed instead. "
                       if "destinations" in raw else
                       "audit events go to the app's log instead (the 'flask_ccsso.audit' logger, at WARNING). ")
                    + f"Fix: add {path}.azureMonitor with endpoint, dcrImmutableId, streamName, tenantId, clientId "
                    "and clientSecret (see docs/audit.md).")
            else:
                apath = join(path, "azureMonitor")
                check_keys(azure_raw, _AZURE_KEYS, apath)
                azure = _azure(azure_raw, apath)
                sinks.append(SinkSettings(type="http", name="azure-log-analytics", url=azure.ingestion_url,
                                          format="azure-monitor", azure=azure))
        else:
            sinks.append(SinkSettings(type="logging", name="logging"))
    elif "azureMonitor" in raw:
        raise ConfigError(join(path, "azureMonitor"), "is set but nothing uses it.",
                          f"set {path}.destination to \"azure-log-analytics\".")

    dest_list = expect(raw, "destinations", list, path)
    if dest_list is not None:
        for i, item in enumerate(dest_list):
            sinks.append(_sink(item, join(join(path, "destinations"), i), i, {s.name for s in sinks}))
    if not sinks:
        sinks.append(SinkSettings(type="logging", name="logging"))
    seen: set[str] = set()
    for i, sink in enumerate(sinks):
        if sink.name in seen:
            raise ConfigError(join(join(path, "destinations"), i) + ".name", f"duplicate sink name {sink.name!r}.",
                              "give each destination its own 'name'.")
        seen.add(sink.name)

    return AuditSettings(destinations=tuple(sinks), notices=tuple(notices), **values)


__all__ = ["AuditSettings", "AzureMonitorSettings", "FailureThresholdSettings", "SinkSettings",
           "parse_logging_block"]
