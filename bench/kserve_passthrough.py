"""The plain KServe custom transformer users would write: a ``kserve.Model`` that forwards.

It is the baseline that shows what KServe's default serving path costs (its FastAPI app,
middleware, latency logging and httpx client to the predictor) with nothing of Nexus
in it: no auth, no limits, no breaker. Started exactly like a KServe transformer:

    python -m bench.kserve_passthrough --model_name chat --predictor_host 127.0.0.1:9000 \
        --http_port 8080 --enable_grpc false
"""

from __future__ import annotations

import argparse

from kserve import Model, ModelServer, model_server


class PassThrough(Model):  # type: ignore[misc]
    """No pre- or post-processing: ``Model.predict`` already calls the predictor's v1 route."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ready = True


def main() -> None:
    parser = argparse.ArgumentParser(parents=[model_server.parser])
    args, _ = parser.parse_known_args()
    # ModelServer reads --predictor_host and the other flags from KServe's own parser.
    ModelServer().start([PassThrough(args.model_name)])


if __name__ == "__main__":
    main()
