"""Settings from GATEWAY_* variables: defaults, and a precise error for every bad value."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from nexus.config import load_settings
from nexus.errors import ConfigError
from tests.support.certs import Authority


def settings(**env: str):  # type: ignore[no-untyped-def]
    return load_settings(env, model_name="chat", predictor_host="127.0.0.1:9000")


def test_defaults() -> None:
    s = settings(GATEWAY_API_KEYS="k1, k2")
    assert s.api_keys == ("k1", "k2")
    assert s.breaker_max_failures == 5
    assert s.breaker_reset_seconds == 30
    assert s.request_timeout_seconds == 600
    assert s.max_body_bytes == 1024 * 1024
    assert s.failure_mode == "open"
    assert s.upstream_base_url == "http://127.0.0.1:9000"


def test_aliases_and_served_name() -> None:
    s = settings(
        GATEWAY_API_KEYS="k",
        GATEWAY_MODEL_ALIASES="primary,chat",
        GATEWAY_UPSTREAM_MODEL_NAME="meta-llama/Llama-3.1-8B",
    )
    assert s.public_models == ("chat", "primary")
    assert s.served_model_name == "meta-llama/Llama-3.1-8B"


def test_policies_by_plain_or_hashed_key() -> None:
    digest = hashlib.sha256(b"secret-key").hexdigest()
    s = settings(
        GATEWAY_API_KEYS=f"sha256:{digest}",
        GATEWAY_API_KEY_POLICIES=f'{{"sha256:{digest}": {{"allowed_models": ["chat"], '
        '"rate_limit_per_minute": 5, "tenant": "acme"}}',
    )
    policy = s.key_policies[f"sha256:{digest}"]
    assert policy.allowed_models == frozenset({"chat"})
    assert policy.rate_limit_per_minute == 5
    assert policy.tenant == "acme"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "no credentials configured"),
        ({"GATEWAY_API_KEYS": "k", "GATEWAY_RATE_LIMIT_PER_MINUTE": "ten"}, "must be an integer"),
        ({"GATEWAY_API_KEYS": "k", "GATEWAY_RATE_LIMIT_FAILURE_MODE": "maybe"}, "'open' or 'closed'"),
        ({"GATEWAY_API_KEYS": "k", "GATEWAY_JWT_ALGORITHMS": "none"}, "never contain 'none'"),
        ({"GATEWAY_API_KEYS": "k", "GATEWAY_JWT_ALGORITHMS": "HS1"}, "unsupported algorithm"),
        ({"GATEWAY_API_KEYS": "sha256:abc"}, "64 hex digits"),
        ({"GATEWAY_API_KEYS": "k", "GATEWAY_API_KEY_POLICIES": "{"}, "not valid JSON"),
        ({"GATEWAY_API_KEYS": "k", "GATEWAY_API_KEY_POLICIES": '{"k": {"rpm": 1}}'}, "unknown fields"),
        ({"GATEWAY_API_KEYS": "k", "GATEWAY_API_KEY_POLICIES": '{"k": {"tokens_per_minute": -1}}'},
         "non-negative integer"),
        ({"GATEWAY_API_KEYS": "k", "GATEWAY_CIRCUIT_BREAKER_MAX_FAILURES": "0"}, "must be >= 1"),
        ({"GATEWAY_API_KEYS": "k", "GATEWAY_REQUEST_TIMEOUT_SECONDS": "-1"}, "must be a finite number > 0"),
        ({"GATEWAY_API_KEYS": "k", "GATEWAY_PREDICTOR_PATH_PREFIX": "openai"}, "start with '/'"),
    ],
)  # fmt: skip
def test_bad_values_are_refused_with_the_variable_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings(**env)


def test_policy_errors_never_print_the_key() -> None:
    with pytest.raises(ConfigError) as error:
        settings(GATEWAY_API_KEYS="k", GATEWAY_API_KEY_POLICIES='{"super-secret-key": 3}')
    assert "super-secret" not in str(error.value)


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ({"GATEWAY_REDIS_URL": "http://127.0.0.1:6379"}, "GATEWAY_REDIS_URL"),
        ({"GATEWAY_REDIS_URL": "redis://127.0.0.1:99999/0"}, "GATEWAY_REDIS_URL"),
        ({"GATEWAY_REDIS_URL": "redis://127.0.0.1:6379/zero"}, "GATEWAY_REDIS_URL"),
        ({"GATEWAY_REDIS_URL": "redis:///0"}, "GATEWAY_REDIS_URL"),
        ({"GATEWAY_JWT_JWKS_URL": "file:///etc/passwd"}, "GATEWAY_JWT_JWKS_URL"),
        ({"GATEWAY_JWT_PUBLIC_KEY": "not a pem"}, "GATEWAY_JWT_PUBLIC_KEY"),
        ({"GATEWAY_JWT_ALGORITHMS": "RS256"}, "GATEWAY_JWT_ALGORITHMS"),
        ({"GATEWAY_REQUEST_TIMEOUT_SECONDS": "nan"}, "GATEWAY_REQUEST_TIMEOUT_SECONDS"),
        ({"GATEWAY_CIRCUIT_BREAKER_RESET_SECONDS": "inf"}, "GATEWAY_CIRCUIT_BREAKER_RESET_SECONDS"),
        ({"GATEWAY_METRICS_TENANT_LABEL": "maybe"}, "GATEWAY_METRICS_TENANT_LABEL"),
        ({"GATEWAY_MODEL_ALIASES": "chat/../x"}, "GATEWAY_MODEL_ALIASES"),
        ({"GATEWAY_MODEL_ALIASES": "a:predict"}, "GATEWAY_MODEL_ALIASES"),
        ({"GATEWAY_RATE_LIMIT_PER_MIN": "5"}, "GATEWAY_RATE_LIMIT_PER_MIN"),
        ({"GATEWAY_API_KEY_POLICIES": '{"k": {"tokens_per_minute": -1}}'}, "tokens_per_minute"),
    ],
)
def test_every_variable_is_checked_at_start(bad: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(
            {"GATEWAY_API_KEYS": "k", "GATEWAY_JWT_SECRET": "s", **bad},
            model_name="chat",
            predictor_host="127.0.0.1:9000",
        )


def test_algorithms_without_keys_are_fine_while_jwts_are_off() -> None:
    """platform/k8s/base/gateway-config.configmap.yaml lists RS256,ES256 everywhere."""
    s = load_settings(
        {"GATEWAY_API_KEYS": "k", "GATEWAY_JWT_ALGORITHMS": "RS256,ES256"},
        model_name="chat",
        predictor_host="127.0.0.1:9000",
    )
    assert not s.jwt.enabled


def test_model_name_is_checked() -> None:
    with pytest.raises(ConfigError, match="--model_name"):
        load_settings({"GATEWAY_API_KEYS": "k"}, model_name="a/b", predictor_host="h:1")


def test_redis_tls_files_are_read_and_checked_at_start(tmp_path: Path) -> None:
    ca = Authority(tmp_path)
    client = ca.issue("client")
    tls_url = {"GATEWAY_API_KEYS": "k", "GATEWAY_REDIS_URL": "rediss://127.0.0.1:6380/0"}
    pem = ca.ca_file.read_text().strip() + "\n"  # its certificate blocks, nothing else
    s = settings(**tls_url, GATEWAY_REDIS_CA_FILE=str(ca.ca_file))
    assert s.redis_tls.ca_pem == pem  # read once, here
    inline = settings(**tls_url, GATEWAY_REDIS_CA_PEM=ca.ca_file.read_text())
    assert inline.redis_tls.ca_pem == pem
    # Bundles label their certificates, often in other alphabets (Mozilla's has
    # "# Label: ..." lines); ssl's cadata takes ASCII only, so only the blocks are kept.
    labelled = tmp_path / "bundle.pem"
    labelled.write_text('# Label: "Főtanúsítvány"\n' + ca.ca_file.read_text(), encoding="utf-8")
    assert settings(**tls_url, GATEWAY_REDIS_CA_FILE=str(labelled)).redis_tls.ca_pem == pem
    assert settings(**tls_url, GATEWAY_REDIS_CA_PEM=labelled.read_text()).redis_tls.ca_pem == pem
    (tmp_path / "notes.txt").write_text("not a certificate")
    (tmp_path / "broken.pem").write_text(
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    )
    bad = [
        ({"GATEWAY_REDIS_CA_FILE": str(tmp_path / "missing.pem")},
         r"GATEWAY_REDIS_CA_FILE: cannot read .*missing\.pem: \[Errno 2\]"),
        ({"GATEWAY_REDIS_CA_FILE": str(tmp_path / "notes.txt")}, "holds no PEM certificate"),
        ({"GATEWAY_REDIS_CA_FILE": str(tmp_path / "broken.pem")},
         "broken.pem is not a bundle of PEM certificates"),
        ({"GATEWAY_REDIS_CA_PEM": "/etc/ssl/ca.pem"}, "GATEWAY_REDIS_CA_PEM holds no PEM"),
        ({"GATEWAY_REDIS_CA_PEM": ca.ca_file.read_text(), "GATEWAY_REDIS_CA_FILE": str(ca.ca_file)},
         "not both"),
        ({"GATEWAY_REDIS_CLIENT_KEY_FILE": str(client.key_file)},
         "GATEWAY_REDIS_CLIENT_KEY_FILE needs GATEWAY_REDIS_CLIENT_CERT_FILE"),
        ({"GATEWAY_REDIS_CLIENT_CERT_FILE": str(client.cert_file),
          "GATEWAY_REDIS_CLIENT_KEY_FILE": str(ca.ca_file)}, "cannot load .*client.crt and "),
    ]  # fmt: skip
    for env, message in bad:
        with pytest.raises(ConfigError, match=message):
            settings(**tls_url, **env)
    # A CA for a redis:// URL is most likely a rediss:// typed without its s.
    with pytest.raises(ConfigError, match="GATEWAY_REDIS_URL is not a rediss:// URL"):
        settings(GATEWAY_API_KEYS="k", GATEWAY_REDIS_URL="redis://h:6379/0",
                 GATEWAY_REDIS_CA_FILE=str(ca.ca_file))  # fmt: skip
    with pytest.raises(ConfigError, match="not a rediss:// URL"):
        settings(GATEWAY_API_KEYS="k", GATEWAY_REDIS_CA_FILE=str(ca.ca_file))
