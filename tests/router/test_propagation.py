"""Header propagation (``PROPAGATE_HEADERS``) and the Splitter's weights, through the process."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.router.conftest import Models, RouterFactory, sequence


async def test_only_headers_matching_a_pattern_are_propagated(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    router = start_router(
        sequence(
            {"serviceUrl": models.url("/echo")},
            {"serviceUrl": models.url("/echo"), "data": "$response"},
        ),
        env={"PROPAGATE_HEADERS": "Authorization,Test-Header-*,x-lowercase"},
    )
    headers = {"authorization": "Bearer t", "test-header-1": "one", "TEST-HEADER-2": "two",
               "X-Other": "no", "x-lowercase": "no: patterns see canonical names"}  # fmt: skip
    async with client.post(router.url, json={}, headers=headers) as response:
        assert response.status == 200
    for seen in models.calls("/echo"):  # every step gets them, not only the first
        assert seen.headers["Authorization"] == "Bearer t"
        assert seen.headers["Test-Header-1"] == "one"
        assert seen.headers["Test-Header-2"] == "two"
        assert "X-Other" not in seen.headers
        assert "X-Lowercase" not in seen.headers


async def test_patterns_search_like_go_and_bad_patterns_are_skipped(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    """Go's MatchString is unanchored: ``Auth`` also matches ``X-Auth-Token``."""
    router = start_router(
        sequence({"serviceUrl": models.url("/echo")}),
        env={"PROPAGATE_HEADERS": "Test-Header-[0-9,Auth,^Content-Type$"},
    )
    headers = {"X-Auth-Token": "a", "Test-Header-1": "dropped: its pattern is invalid",
               "Content-Type": "application/x-custom", "Host": "must.not.travel"}  # fmt: skip
    async with client.post(router.url, data=b"{}", headers=headers) as response:
        assert response.status == 200
    seen = models.calls("/echo")[0]
    assert seen.headers["X-Auth-Token"] == "a"
    assert "Test-Header-1" not in seen.headers
    # A propagated Content-Type is kept; the router adds application/json only when absent.
    assert seen.headers["Content-Type"] == "application/x-custom"
    assert seen.headers["Host"] == f"127.0.0.1:{models.port}"


async def test_no_env_propagates_nothing(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    router = start_router(sequence({"serviceUrl": models.url("/echo")}))
    async with client.post(router.url, json={}, headers={"Authorization": "x"}) as response:
        assert response.status == 200
    assert "Authorization" not in models.calls("/echo")[0].headers


async def test_splitter_follows_weights(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    spec = {"nodes": {"root": {"routerType": "Splitter", "steps": [
        {"name": "a", "serviceUrl": models.url("/predictions/a"), "weight": 30},
        {"name": "b", "serviceUrl": models.url("/predictions/b"), "weight": 70},
    ]}}}  # fmt: skip
    router = start_router(spec)
    total = 400

    async def one() -> str:
        async with client.post(router.url, json={}) as response:
            assert response.status == 200
            assert response.headers["x-nexus-graph-step"] == (await response.json())["predictions"]
            return response.headers["x-nexus-graph-step"]

    answers = await asyncio.gather(*(one() for _ in range(total)))
    count_a = answers.count("a")
    # Binomial(400, 0.3): mean 120, sd 9.2; ±5 sd keeps a false failure below 1e-6.
    assert 74 <= count_a <= 166, count_a
    assert count_a + answers.count("b") == total


async def test_splitter_with_all_weight_on_one_step_never_picks_the_other(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    spec = {"nodes": {"root": {"routerType": "Splitter", "steps": [
        {"serviceUrl": models.url("/predictions/none"), "weight": 0},
        {"serviceUrl": models.url("/predictions/all"), "weight": 100},
    ]}}}  # fmt: skip
    router = start_router(spec)
    for _ in range(50):
        async with client.post(router.url, json={}) as response:
            assert await response.json() == {"predictions": "all"}
    assert not models.calls("/predictions/none")


async def test_a_fallback_step_is_marked_and_a_client_cannot_forge_the_mark(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    """The fallback step carries ``X-Nexus-Fallback: <failed step>`` so its transformer does
    not count the caller's request twice (issue 12, item 4); a client's own value never
    travels, even when every header is propagated."""
    router = start_router(
        sequence(
            {"name": "primary", "serviceUrl": models.url("/upstream-failure")},
            {
                "name": "fallback",
                "serviceUrl": models.url("/echo"),
                "data": "$request",
                "condition": "error.upstream_failure",
            },
        ),
        env={"PROPAGATE_HEADERS": ".*"},
    )
    headers = {"X-Nexus-Fallback": "forged", "Authorization": "Bearer t"}
    async with client.post(router.url, json={"q": 1}, headers=headers) as response:
        assert response.status == 200
        assert await response.json() == {"q": 1}
    (primary,) = models.calls("/upstream-failure")
    assert "X-Nexus-Fallback" not in primary.headers
    assert primary.headers["Authorization"] == "Bearer t"
    (fallback,) = models.calls("/echo")
    assert fallback.headers["X-Nexus-Fallback"] == "primary"
    assert fallback.headers["Authorization"] == "Bearer t"
