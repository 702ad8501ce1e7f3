"""The front's weighted draw, the port book and the env resolution of a transformer."""

from __future__ import annotations

from pathlib import Path

import pytest

from nexus.errors import PlatformError, ResourceError
from nexus.local.front import Backend, choose
from nexus.local.ports import PortBook
from nexus.local.resources import container_env, predictor_command

BACKENDS = (Backend("r2", "http://a", 20), Backend("r1", "http://b", 80))


@pytest.mark.parametrize(
    ("draw", "revision"), [(0.0, "r2"), (19.99, "r2"), (20.0, "r1"), (99.9, "r1")]
)
def test_choose_uses_cumulative_weights(draw: float, revision: str) -> None:
    chosen = choose(BACKENDS, draw)
    assert chosen is not None
    assert chosen.revision == revision


def test_choose_without_backends_is_none() -> None:
    assert choose((), 5.0) is None


def test_ports_are_remembered_and_skip_ports_in_use(tmp_path: Path) -> None:
    busy = {18100}
    book = PortBook(tmp_path / "ports.json", base=18100, span=3, in_use=busy.__contains__)
    assert book.allocate("mlflow") == 18101
    assert book.allocate("redis") == 18102
    again = PortBook(tmp_path / "ports.json", base=18100, span=3, in_use=lambda _: False)
    assert again.allocate("mlflow") == 18101, "a restart keeps the port"
    with pytest.raises(PlatformError, match="no free port"):
        book.allocate("third")
    book.release("redis")
    assert book.allocate("third") == 18102


def test_container_env_resolves_references_like_kubernetes() -> None:
    container = {
        "envFrom": [{"configMapRef": {"name": "cfg"}}, {"secretRef": {"name": "sec"}}],
        "env": [
            {"name": "A", "value": "from-env"},
            {
                "name": "T",
                "valueFrom": {"secretKeyRef": {"name": "hf", "key": "T", "optional": True}},
            },
        ],
    }
    env = container_env(container, configmaps={"cfg": {"A": "cm", "B": "cm"}},
                        secrets={"sec": {"KEY": "k"}})  # fmt: skip
    assert env == {"A": "from-env", "B": "cm", "KEY": "k"}
    with pytest.raises(ResourceError, match="Secret 'sec'"):
        container_env(container, configmaps={"cfg": {}}, secrets={})


def test_predictor_command_is_the_cpu_worker() -> None:
    cpu = predictor_command(name="llama-8b", port=1, project_dir=Path("/checkout"))
    assert cpu[1] == "/checkout/bento/cpu_worker.py"
    assert cpu[cpu.index("--model-name") + 1] == "llama-8b"
