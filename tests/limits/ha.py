"""Real highly available Redis topologies for tests: a Cluster and a Sentinel group.

Both are started on free loopback ports in the test's tmp dir and stopped with it. Failure
detection is shortened (``cluster-node-timeout``, ``down-after-milliseconds``) so a killed
master is replaced in seconds rather than the defaults' 15 s and 30 s.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis as redis_sync

from tests.support.certs import Issued
from tests.support.processes import free_port, managed
from tests.support.servers import Redis, redis_server

NODE_TIMEOUT_MS = 1000


@dataclass
class Cluster:
    nodes: list[Redis]

    @property
    def url(self) -> str:
        seeds = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:2])
        return f"redis+cluster://{seeds}"

    @property
    def tls_url(self) -> str:
        seeds = ",".join(f"127.0.0.1:{n.tls_port}" for n in self.nodes[:2])
        return f"rediss+cluster://{seeds}"

    def masters(self) -> list[Redis]:
        client = redis_sync.Redis(port=self.live()[0].port)
        ports = {int(entry[2][1]) for entry in client.execute_command("CLUSTER", "SLOTS")}
        return [n for n in self.nodes if n.port in ports]

    def live(self) -> list[Redis]:
        return [n for n in self.nodes if n.process.proc.poll() is None]

    def master_of(self, key: str) -> Redis:
        client = redis_sync.Redis(port=self.live()[0].port)
        slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
        for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return next(n for n in self.nodes if n.port == int(master[1]))
        raise AssertionError(f"no master for slot {slot}")

    def kill(self, node: Redis, *, timeout: float = 30.0) -> Redis:
        """Kill ``node`` (a master) and return the replica the cluster promotes instead."""
        client = redis_sync.Redis(port=next(n for n in self.live() if n is not node).port)
        ranges = client.execute_command("CLUSTER", "SLOTS")
        start = next(r[0] for r in ranges if int(r[2][1]) == node.port)
        node.process.kill()
        node.process.proc.wait()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for first, _, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if first == start and int(master[1]) != node.port and _state_ok(client):
                    return next(n for n in self.nodes if n.port == int(master[1]))
            time.sleep(0.1)
        raise AssertionError("no replica was promoted")


def _state_ok(client: redis_sync.Redis) -> bool:
    return b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO")


@contextlib.contextmanager
def redis_cluster(tmp: Path, *, masters: int = 3, tls: Issued | None = None) -> Iterator[Cluster]:
    """``masters`` masters with one replica each (``redis-cli --cluster create``).

    With ``tls`` the nodes also serve TLS and talk to each other over it (bus and
    replication); ``CLUSTER SLOTS`` then answers a TLS client with the TLS ports
    (``src/cluster.c`` addNodeToNodeReply) and a plaintext one, like these helpers, with
    the plaintext ports.
    """
    tls_args = ("--tls-cluster", "yes", "--tls-replication", "yes") if tls else ()
    with contextlib.ExitStack() as stack:
        nodes = []
        for i in range(masters * 2):
            # The bus port is explicit: the default (port + 10000) may not exist or be free.
            args = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                    "--cluster-port", str(free_port()), "--cluster-replica-validity-factor", "0",
                    "--cluster-node-timeout", str(NODE_TIMEOUT_MS), *tls_args)  # fmt: skip
            nodes.append(
                stack.enter_context(redis_server(tmp / f"node{i}", extra_args=args, tls=tls))
            )
        cli = shutil.which("redis-cli")
        assert cli is not None, "redis-cli is not installed"
        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes),
             "--cluster-replicas", "1", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        clients = [redis_sync.Redis(port=n.port) for n in nodes]
        # Ready when every node says ok and every slot range lists a synced replica.
        while not all(_state_ok(c) for c in clients) or any(
            len(entry) < 4 for entry in clients[0].execute_command("CLUSTER", "SLOTS")
        ):
            assert time.monotonic() < deadline, "the cluster never reached cluster_state:ok"
            time.sleep(0.1)
        yield Cluster(nodes)


@dataclass
class SentinelGroup:
    master: Redis
    replica: Redis
    sentinel_ports: list[int]
    name: str = "nexus"
    sentinel_tls_ports: list[int] | None = None  # with TLS, also what the sentinels name

    @property
    def url(self) -> str:
        sentinels = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{sentinels}/{self.name}/0"

    @property
    def tls_url(self) -> str:
        sentinels = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_tls_ports or ())
        return f"rediss+sentinel://{sentinels}/{self.name}/0"

    def named_master(self) -> int:
        client = redis_sync.Redis(port=self.sentinel_ports[0])
        _, port = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name)
        return int(port)

    def kill_master(self, *, timeout: float = 30.0) -> None:
        """Kill the master once the replica holds all it wrote (Redis replicates
        asynchronously: what a failover may lose is docs/redis.md's; the tests measure the
        limiter); return once the sentinels name the replica, now a master."""
        primary = redis_sync.Redis(port=self.master.port)
        written = int(primary.info("replication")["master_repl_offset"])
        deadline = time.monotonic() + timeout
        while _replica_offset(primary) < written:
            assert time.monotonic() < deadline, "the replica never caught up with the master"
            time.sleep(0.05)
        self.master.process.kill()
        self.master.process.proc.wait()
        deadline = time.monotonic() + timeout
        replica = redis_sync.Redis(port=self.replica.port)
        promoted = self.replica.tls_port if self.sentinel_tls_ports else self.replica.port
        while self.named_master() != promoted or replica.role()[0] != b"master":
            assert time.monotonic() < deadline, "the sentinels never promoted the replica"
            time.sleep(0.1)


def _replica_offset(primary: redis_sync.Redis) -> int:
    """The first replica's acknowledged offset once it is online (synced), else -1."""
    replica = primary.info("replication").get("slave0")
    if not isinstance(replica, dict) or replica.get("state") != "online":
        return -1
    return int(replica["offset"])


@contextlib.contextmanager
def redis_sentinels(
    tmp: Path, *, sentinels: int = 3, tls: Issued | None = None
) -> Iterator[SentinelGroup]:
    """A master, its replica and ``sentinels`` sentinels watching them (quorum 2).

    With ``tls`` every process also serves TLS, replication and the sentinels' own links
    use it (``tls-replication``: a sentinel then announces its TLS port to the others,
    ``src/sentinel.c`` sentinelSendHello), and the sentinels watch the master's TLS port,
    so that is the address they name. Plaintext ports stay for these helpers.
    """
    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server is not installed"
    repl = ("--tls-replication", "yes") if tls else ()
    with contextlib.ExitStack() as stack:
        master = stack.enter_context(redis_server(tmp / "master", extra_args=repl, tls=tls))
        master_port = master.tls_port or master.port
        replica = stack.enter_context(
            redis_server(tmp / "replica", tls=tls,
                         extra_args=(*repl, "--replicaof", "127.0.0.1", str(master_port)))
        )  # fmt: skip
        ports, tls_ports = [], []
        for i in range(sentinels):
            port = free_port()
            workdir = tmp / f"sentinel{i}"
            workdir.mkdir(parents=True)
            conf = workdir / "sentinel.conf"
            tls_conf = ""
            if tls is not None:
                tls_ports.append(free_port())
                tls_conf = (f"tls-port {tls_ports[-1]}\ntls-cert-file {tls.cert_file}\n"
                            f"tls-key-file {tls.key_file}\ntls-ca-cert-file {tls.ca_file}\n"
                            "tls-auth-clients no\ntls-replication yes\n")  # fmt: skip
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {workdir}\n{tls_conf}"
                f"sentinel monitor nexus 127.0.0.1 {master_port} 2\n"
                f"sentinel down-after-milliseconds nexus {NODE_TIMEOUT_MS}\n"
                "sentinel failover-timeout nexus 10000\n"
            )
            stack.enter_context(
                managed([binary, str(conf), "--sentinel"], log=workdir / "log", ready_port=port)
            )
            ports.append(port)
        group = SentinelGroup(master, replica, ports, sentinel_tls_ports=tls_ports or None)
        deadline = time.monotonic() + 30
        primary = redis_sync.Redis(port=master.port)
        # The replica must have finished its initial sync (Redis 7 waits
        # repl-diskless-sync-delay, 5 s, before sending it): a master killed before that
        # leaves a promoted replica with none of its data.
        while _replica_offset(primary) < 0 or any(
            redis_sync.Redis(port=p).sentinel_master("nexus")["num-other-sentinels"] < sentinels - 1
            for p in ports
        ):
            assert time.monotonic() < deadline, "the sentinels never saw each other"
            time.sleep(0.1)
        yield group
