"""Typed, frozen settings of the transformer, read from ``GATEWAY_*`` environment variables.

Settings are built once inside ``main()`` (never at import) and passed to whatever needs
them. Every malformed value raises ``ConfigError`` naming the variable, so a bad
deployment fails at start-up with a precise message instead of at the first request.
"""

from __future__ import annotations

import math
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote, urlsplit

import orjson

from nexus.errors import ConfigError

MIB = 1024 * 1024
DEFAULT_RATE_LIMIT_PER_MINUTE = 600
DEFAULT_TOKENS_PER_MINUTE = 200_000
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
JWT_ALGORITHMS = frozenset(
    {"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256"}
)

FailureMode = Literal["open", "closed"]

# Every variable ``load_settings`` reads. Any other ``GATEWAY_*`` name is a typo (or a
# setting from another version) that would otherwise be ignored without a word.
KNOWN_VARIABLES = frozenset(
    {
        "GATEWAY_API_KEYS",
        "GATEWAY_API_KEY_POLICIES",
        "GATEWAY_JWT_SECRET",
        "GATEWAY_JWT_PUBLIC_KEY",
        "GATEWAY_JWT_JWKS_URL",
        "GATEWAY_JWT_ALGORITHMS",
        "GATEWAY_JWT_AUDIENCE",
        "GATEWAY_JWT_ISSUER",
        "GATEWAY_RATE_LIMIT_PER_MINUTE",
        "GATEWAY_TOKENS_PER_MINUTE",
        "GATEWAY_REDIS_URL",
        "GATEWAY_REDIS_CA_FILE",
        "GATEWAY_REDIS_CA_PEM",
        "GATEWAY_REDIS_CLIENT_CERT_FILE",
        "GATEWAY_REDIS_CLIENT_KEY_FILE",
        "GATEWAY_RATE_LIMIT_FAILURE_MODE",
        "GATEWAY_CIRCUIT_BREAKER_MAX_FAILURES",
        "GATEWAY_CIRCUIT_BREAKER_RESET_SECONDS",
        "GATEWAY_REQUEST_TIMEOUT_SECONDS",
        "GATEWAY_MAX_BODY_BYTES",
        "GATEWAY_MODEL_ALIASES",
        "GATEWAY_UPSTREAM_MODEL_NAME",
        "GATEWAY_PREDICTOR_PATH_PREFIX",
        "GATEWAY_METRICS_TENANT_LABEL",
    }
)
# Model names travel in URL paths (``/v1/models/{name}:predict``, ``/v2/models/{name}``).
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")
PEM_CERTIFICATE = re.compile(
    r"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----"
)
BOOLEANS = {
    "": False,
    "0": False,
    "false": False,
    "no": False,
    "1": True,
    "true": True,
    "yes": True,
}


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """What one API key (or JWT) may do; ``None`` means "use the default"."""

    allowed_models: frozenset[str] | None = None
    rate_limit_per_minute: int | None = None
    tokens_per_minute: int | None = None
    tenant: str | None = None


@dataclass(frozen=True, slots=True)
class JwtSettings:
    secret: str | None = None
    public_key: str | None = None
    jwks_url: str | None = None
    algorithms: tuple[str, ...] = ()
    audience: str | None = None
    issuer: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.secret or self.public_key or self.jwks_url)


@dataclass(frozen=True, slots=True)
class RedisTls:
    """How the limiter verifies a ``rediss`` Redis, and proves itself to one that asks.

    ``ca_pem`` (``GATEWAY_REDIS_CA_FILE``, read at start, or ``GATEWAY_REDIS_CA_PEM``) is
    trusted on top of the system's CAs, as redis-py 8.1's ``ssl_ca_certs`` is
    (``redis/connection.py`` SSLConnection: ``create_default_context()`` then
    ``load_verify_locations``). The client certificate (mTLS) is read from its files when
    the context is made. Certificates and host names are always verified: there is no
    switch to turn that off.
    """

    ca_pem: str | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None

    def context(self) -> ssl.SSLContext:
        """A client context for Redis; ``ssl.SSLError``/``OSError`` if the files are bad."""
        context = ssl.create_default_context()  # system CAs (and SSL_CERT_FILE), verified
        if self.ca_pem is not None:
            context.load_verify_locations(cadata=self.ca_pem)
        if self.client_cert_file is not None:
            context.load_cert_chain(self.client_cert_file, self.client_key_file)
        return context


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Everything the transformer's policies need, validated."""

    model_name: str
    predictor_host: str
    api_keys: tuple[str, ...] = ()
    key_policies: Mapping[str, KeyPolicy] = field(default_factory=dict)
    jwt: JwtSettings = field(default_factory=JwtSettings)
    rate_limit_per_minute: int = DEFAULT_RATE_LIMIT_PER_MINUTE
    tokens_per_minute: int = DEFAULT_TOKENS_PER_MINUTE
    redis_url: str | None = None
    redis_tls: RedisTls = field(default_factory=RedisTls)
    failure_mode: FailureMode = "open"
    breaker_max_failures: int = 5
    breaker_reset_seconds: float = 30.0
    request_timeout_seconds: float = 600.0
    max_body_bytes: int = MIB
    model_aliases: tuple[str, ...] = ()
    upstream_model_name: str | None = None
    predictor_path_prefix: str = ""
    predictor_use_ssl: bool = False
    tenant_label: bool = False

    @property
    def public_models(self) -> tuple[str, ...]:
        """Model names clients may ask for: the ISVC name first, then the aliases."""
        return (self.model_name, *(a for a in self.model_aliases if a != self.model_name))

    @property
    def served_model_name(self) -> str:
        """The name the predictor knows the model by (what `model` is rewritten to)."""
        return self.upstream_model_name or self.model_name

    @property
    def upstream_base_url(self) -> str:
        scheme = "https" if self.predictor_use_ssl else "http"
        host = self.predictor_host
        if host.startswith(("http://", "https://")):
            return host.rstrip("/")
        return f"{scheme}://{host}"


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or value <= minimum:
        raise ConfigError(f"{name} must be a finite number > {minimum}, got {raw!r}")
    return value


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw not in BOOLEANS:
        raise ConfigError(f"{name} must be one of true/false/1/0/yes/no, got {raw!r}")
    return BOOLEANS[raw]


REDIS_SCHEMES = {
    "redis": "single", "rediss": "single",
    "redis+cluster": "cluster", "rediss+cluster": "cluster",
    "redis+sentinel": "sentinel", "rediss+sentinel": "sentinel",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where the limiter's Redis is: one node, a Cluster's seed nodes, or the Sentinels
    that know the ``master`` (``docs/redis.md``). Credentials and TLS are the data nodes'."""

    kind: Literal["single", "cluster", "sentinel"]
    nodes: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    master: str | None = None


def parse_redis_url(raw: str) -> RedisTarget:
    """``redis[s]://[user:pass@]host:port[/db]``, ``redis[s]+cluster://h:p[,h:p...]`` or
    ``redis[s]+sentinel://h:p[,h:p...]/<master>[/<db>]``; ``ValueError`` says what is wrong."""
    parts = urlsplit(raw)
    kind = REDIS_SCHEMES.get(parts.scheme)
    if kind is None:
        raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r}; use one of "
                         + ", ".join(f"{s}://" for s in REDIS_SCHEMES))  # fmt: skip
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    nodes = []
    for hostport in hosts.split(","):
        try:
            one = urlsplit(f"//{hostport}")
            nodes.append((one.hostname or "", one.port or (26379 if kind == "sentinel" else 6379)))
        except ValueError:
            raise ValueError(f"invalid port in {hostport!r}") from None
        if not one.hostname:
            raise ValueError("names no host")
    if kind == "single" and len(nodes) > 1:
        raise ValueError(f"{parts.scheme}:// takes one host; use {parts.scheme}+cluster://")
    segments = [unquote(s) for s in parts.path.split("/") if s]
    master = segments.pop(0) if kind == "sentinel" and segments else None
    if kind == "sentinel" and not master:
        raise ValueError("a Sentinel URL names its master: redis+sentinel://h:p/<master>")
    db = segments.pop(0) if segments else "0"
    if segments or not db.isdigit():
        raise ValueError(f"the database must be a number, got {parts.path!r}")
    if kind == "cluster" and db != "0":
        raise ValueError("Redis Cluster has only database 0")
    return RedisTarget(
        kind=kind,  # type: ignore[arg-type]
        nodes=tuple(nodes),
        db=int(db),
        username=unquote(user) if user else None,
        password=unquote(password) if password else None,
        tls=parts.scheme.startswith("rediss"),
        master=master,
    )


def _redis_url(env: Mapping[str, str]) -> str | None:
    """``GATEWAY_REDIS_URL``: a URL ``parse_redis_url`` accepts."""
    raw = env.get("GATEWAY_REDIS_URL", "").strip()
    if not raw:
        return None
    try:
        parse_redis_url(raw)
    except ValueError as exc:
        raise ConfigError(f"GATEWAY_REDIS_URL: {exc}") from None
    return raw


def _redis_tls(env: Mapping[str, str]) -> RedisTls:
    """The CA bundle (``GATEWAY_REDIS_CA_FILE``, or the PEM itself in ``GATEWAY_REDIS_CA_PEM``,
    as ``GATEWAY_JWT_PUBLIC_KEY`` carries its key: the rendered transformer has no volumes,
    only ``envFrom``) and ``GATEWAY_REDIS_CLIENT_{CERT,KEY}_FILE``, checked by building the
    context once, so a bad value stops the start rather than every connect."""
    names = ("GATEWAY_REDIS_CA_FILE", "GATEWAY_REDIS_CA_PEM", "GATEWAY_REDIS_CLIENT_CERT_FILE",
             "GATEWAY_REDIS_CLIENT_KEY_FILE")  # fmt: skip
    ca_file, ca_pem, cert_file, key_file = (env.get(name, "").strip() or None for name in names)
    if key_file is not None and cert_file is None:
        raise ConfigError("GATEWAY_REDIS_CLIENT_KEY_FILE needs GATEWAY_REDIS_CLIENT_CERT_FILE")
    where = "GATEWAY_REDIS_CA_PEM"
    if ca_file is not None:
        if ca_pem is not None:
            raise ConfigError("set GATEWAY_REDIS_CA_FILE or GATEWAY_REDIS_CA_PEM, not both")
        where = f"GATEWAY_REDIS_CA_FILE: {ca_file}"
        try:
            with open(ca_file, encoding="utf-8", errors="replace") as file:
                ca_pem = file.read()
        except OSError as exc:
            raise ConfigError(f"GATEWAY_REDIS_CA_FILE: cannot read {ca_file}: {exc}") from None
    if ca_pem is not None:
        # Only the certificate blocks: bundles carry comment labels, often not ASCII, which
        # ssl's cadata refuses with a TypeError.
        blocks = PEM_CERTIFICATE.findall(ca_pem)
        if not blocks:
            raise ConfigError(f"{where} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
        ca_pem = "\n".join(blocks) + "\n"
        try:
            RedisTls(ca_pem=ca_pem).context()
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"{where} is not a bundle of PEM certificates: {exc}") from None
    tls = RedisTls(ca_pem=ca_pem, client_cert_file=cert_file, client_key_file=key_file)
    if cert_file is not None:
        try:
            tls.context()
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"GATEWAY_REDIS_CLIENT_CERT_FILE/_KEY_FILE: cannot load {cert_file}"
                f"{f' and {key_file}' if key_file else ''} as a certificate and key: {exc}"
            ) from None
    return tls


def _http_url(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name} must be an http:// or https:// URL, got {raw[:100]!r}")
    return raw


def _model_names(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    names = _csv(env, name)
    for model in names:
        if not MODEL_NAME.fullmatch(model):
            raise ConfigError(
                f"{name}: {model[:100]!r} is not a model name (letters, digits, '.', '_', '-')"
            )
    return names


def _check_names(env: Mapping[str, str]) -> None:
    unknown = sorted(k for k in env if k.startswith("GATEWAY_") and k not in KNOWN_VARIABLES)
    if unknown:
        raise ConfigError(
            f"unknown setting {unknown[0]}: not one of {', '.join(sorted(KNOWN_VARIABLES))}"
        )


def _csv(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in env.get(name, "").split(",") if part.strip())


def _optional_int(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{where} must be a non-negative integer, got {value!r}")
    return value


def parse_key_policies(raw: str) -> dict[str, KeyPolicy]:
    """Parse ``GATEWAY_API_KEY_POLICIES``: ``{key or sha256:<hex>: {...}}``."""
    if not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"GATEWAY_API_KEY_POLICIES is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError("GATEWAY_API_KEY_POLICIES must be a JSON object keyed by API key")
    known = {"allowed_models", "rate_limit_per_minute", "tokens_per_minute", "tenant"}
    policies: dict[str, KeyPolicy] = {}
    for key, spec in data.items():
        where = f"GATEWAY_API_KEY_POLICIES[{_redact(key)}]"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where} must be an object")
        unknown = set(spec) - known
        if unknown:
            raise ConfigError(
                f"{where} has unknown fields {sorted(unknown)}; known: {sorted(known)}"
            )
        models = spec.get("allowed_models")
        if models is not None and (
            not isinstance(models, list) or not all(isinstance(m, str) for m in models)
        ):
            raise ConfigError(f"{where}.allowed_models must be a list of model names")
        tenant = spec.get("tenant")
        if tenant is not None and not isinstance(tenant, str):
            raise ConfigError(f"{where}.tenant must be a string")
        policies[key] = KeyPolicy(
            allowed_models=frozenset(models) if models is not None else None,
            rate_limit_per_minute=_optional_int(
                spec.get("rate_limit_per_minute"), f"{where}.rate_limit_per_minute"
            ),
            tokens_per_minute=_optional_int(
                spec.get("tokens_per_minute"), f"{where}.tokens_per_minute"
            ),
            tenant=tenant,
        )
    return policies


def _redact(key: str) -> str:
    """Name a key in an error message without printing the secret."""
    if key.startswith("sha256:"):
        return key[:15] + "…"
    return f"<key ending …{key[-2:]}>" if len(key) > 6 else "<short key>"


def load_settings(
    env: Mapping[str, str], *, model_name: str, predictor_host: str | None, use_ssl: bool = False
) -> GatewaySettings:
    """Build and validate the transformer settings from an environment mapping."""
    if not predictor_host:
        raise ConfigError("--predictor_host is required: the transformer proxies to a predictor")
    if not MODEL_NAME.fullmatch(model_name or ""):
        raise ConfigError(f"--model_name {model_name!r} is not a model name")
    _check_names(env)
    failure_mode = env.get("GATEWAY_RATE_LIMIT_FAILURE_MODE", "open").strip().lower() or "open"
    if failure_mode not in ("open", "closed"):
        raise ConfigError(
            f"GATEWAY_RATE_LIMIT_FAILURE_MODE must be 'open' or 'closed', got {failure_mode!r}"
        )
    algorithms = _csv(env, "GATEWAY_JWT_ALGORITHMS")
    for alg in algorithms:
        if alg.lower() == "none":
            raise ConfigError("GATEWAY_JWT_ALGORITHMS must never contain 'none'")
        if alg not in JWT_ALGORITHMS:
            raise ConfigError(
                f"GATEWAY_JWT_ALGORITHMS: unsupported algorithm {alg!r}; "
                f"use some of {sorted(JWT_ALGORITHMS)}"
            )
    public_key = env.get("GATEWAY_JWT_PUBLIC_KEY", "").strip() or None
    if public_key is not None and not public_key.startswith("-----BEGIN "):
        raise ConfigError("GATEWAY_JWT_PUBLIC_KEY must be a PEM public key (-----BEGIN ...)")
    jwt = JwtSettings(
        secret=env.get("GATEWAY_JWT_SECRET") or None,
        public_key=public_key,
        jwks_url=_http_url(env, "GATEWAY_JWT_JWKS_URL"),
        algorithms=algorithms,
        audience=env.get("GATEWAY_JWT_AUDIENCE") or None,
        issuer=env.get("GATEWAY_JWT_ISSUER") or None,
    )
    usable = [
        a
        for a in algorithms
        if (jwt.secret if a in HMAC_ALGORITHMS else (jwt.public_key or jwt.jwks_url))
    ]
    if jwt.enabled and algorithms and not usable:
        # The shipped ConfigMap lists RS256,ES256 for every deployment; that is fine while
        # JWTs are off, but with only a secret configured no token could ever pass.
        raise ConfigError(
            f"GATEWAY_JWT_ALGORITHMS ({', '.join(algorithms)}) lists no algorithm the"
            " configured key can verify: HS* need GATEWAY_JWT_SECRET, RS/ES/PS need"
            " GATEWAY_JWT_PUBLIC_KEY or GATEWAY_JWT_JWKS_URL"
        )
    api_keys = _csv(env, "GATEWAY_API_KEYS")
    for key in api_keys:
        if key.startswith("sha256:"):
            digest = key.removeprefix("sha256:")
            if len(digest) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digest):
                raise ConfigError(f"GATEWAY_API_KEYS: {_redact(key)} is not sha256:<64 hex digits>")
    if not api_keys and not jwt.enabled:
        raise ConfigError(
            "no credentials configured: set GATEWAY_API_KEYS and/or one of "
            "GATEWAY_JWT_SECRET, GATEWAY_JWT_PUBLIC_KEY, GATEWAY_JWT_JWKS_URL"
        )
    redis_url = _redis_url(env)
    redis_tls = _redis_tls(env)
    if redis_tls != RedisTls() and not (redis_url and parse_redis_url(redis_url).tls):
        # Most likely a rediss:// written redis://, which would send the password in clear.
        raise ConfigError(
            "GATEWAY_REDIS_CA_FILE/_CA_PEM/_CLIENT_CERT_FILE are for TLS, but"
            " GATEWAY_REDIS_URL is not a rediss:// URL"
        )
    prefix = env.get("GATEWAY_PREDICTOR_PATH_PREFIX", "").strip().rstrip("/")
    if prefix and not prefix.startswith("/"):
        raise ConfigError(f"GATEWAY_PREDICTOR_PATH_PREFIX must start with '/', got {prefix!r}")
    return GatewaySettings(
        model_name=model_name,
        predictor_host=predictor_host,
        api_keys=api_keys,
        key_policies=parse_key_policies(env.get("GATEWAY_API_KEY_POLICIES", "")),
        jwt=jwt,
        rate_limit_per_minute=_int(
            env, "GATEWAY_RATE_LIMIT_PER_MINUTE", DEFAULT_RATE_LIMIT_PER_MINUTE
        ),
        tokens_per_minute=_int(env, "GATEWAY_TOKENS_PER_MINUTE", DEFAULT_TOKENS_PER_MINUTE),
        redis_url=redis_url,
        redis_tls=redis_tls,
        failure_mode="closed" if failure_mode == "closed" else "open",
        breaker_max_failures=_int(env, "GATEWAY_CIRCUIT_BREAKER_MAX_FAILURES", 5, minimum=1),
        breaker_reset_seconds=_float(env, "GATEWAY_CIRCUIT_BREAKER_RESET_SECONDS", 30.0),
        request_timeout_seconds=_float(env, "GATEWAY_REQUEST_TIMEOUT_SECONDS", 600.0),
        max_body_bytes=_int(env, "GATEWAY_MAX_BODY_BYTES", MIB, minimum=1),
        model_aliases=_model_names(env, "GATEWAY_MODEL_ALIASES"),
        upstream_model_name=env.get("GATEWAY_UPSTREAM_MODEL_NAME") or None,
        predictor_path_prefix=prefix,
        predictor_use_ssl=use_ssl,
        tenant_label=_bool(env, "GATEWAY_METRICS_TENANT_LABEL"),
    )
