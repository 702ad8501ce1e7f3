"""``nexus release``: run the release pipeline locally, or submit it to a KFP cluster.

Endpoints not given as flags come from ``<state dir>/endpoints.json`` (written by
``nexus up``), so that after ``nexus up`` a local release needs only the model and
version. The tracking URI also falls back to ``$MLFLOW_TRACKING_URI``.
"""

from __future__ import annotations

import argparse
from typing import Any

from nexus.cli.registry import tracking_uri
from nexus.errors import ConfigError
from nexus.registry import conventions as c
from nexus.release.gate import EXIT_BLOCKED, OUTCOME_BLOCKED
from nexus.release.resolve import LOCAL_ENVIRONMENT
from nexus.release.tracking import LocalEvidence, save_local

EXIT_CODES = {"promoted": 0, "rolled_back": 3, OUTCOME_BLOCKED: EXIT_BLOCKED}


def arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The pipeline's parameters from flags, ``endpoints.json`` and the environment."""
    from nexus.release.run import local_endpoints

    # A cluster cannot reach this machine's endpoints: with --kfp-host only flags count,
    # and what is left empty takes the pipeline's in-cluster default (release/submit.py).
    endpoints = {} if args.kfp_host else local_endpoints(args.state_dir)
    tracking = (
        args.tracking_uri if args.kfp_host else tracking_uri(args.tracking_uri, args.state_dir)
    )
    if args.steps:
        c.canary_steps(args.steps, source="--steps")  # refused here, before anything runs
    window = args.analysis_window
    if window is None:
        window = 60.0 if args.environment == LOCAL_ENVIRONMENT else 600.0
    return {
        "model_name": args.name,
        "version": str(args.version),
        "environment": args.environment,
        "canary_percent": args.canary_percent,
        "steps": args.steps,
        "analysis_window_s": float(window),
        "max_error_ratio": args.max_error_ratio,
        "max_p95_latency_ratio": args.max_p95_latency_ratio,
        "min_canary_requests": args.min_canary_requests,
        "gitops_repo": args.gitops_repo or endpoints.get("gitops_repo", ""),
        "prometheus_url": args.prometheus_url or endpoints.get("prometheus_url", ""),
        "tracking_uri": tracking,
        "status_url": args.status_url or endpoints.get("status_url", ""),
        "namespace": args.namespace,
        "wait_timeout_s": float(args.wait_timeout),
    }


def release(args: argparse.Namespace) -> int:
    from nexus.release.run import run_inline, run_local
    from nexus.release.submit import submit

    params = arguments(args)
    missing = [k for k in ("tracking_uri", "gitops_repo") if not params[k]]
    if missing and not args.kfp_host:
        raise ConfigError(f"no {' or '.join(missing)}: pass the flag(s) or run `nexus up` first")
    if args.kfp_host:
        url = submit(args.kfp_host, params, package=args.package)
        print(f"submitted release of {args.name} version {args.version}: {url}")
        return 0
    print(f"releasing {args.name} version {args.version} to {args.environment}", flush=True)
    if args.inline:
        status = run_inline(params)
        print(f"\n{args.name} version {args.version}: {status}")
        stem = args.state_dir / "kfp" / f"release-{args.name}-{args.version}"
        _print_evidence(save_local(params["tracking_uri"], args.name, params["version"], stem))
        return EXIT_CODES.get(status, 1)
    outcome = run_local(params, pipeline_root=args.state_dir / "kfp")
    reasons = "; ".join(outcome.analysis.get("reasons", [])) or "no analysis"
    print(f"\n{args.name} version {args.version}: {outcome.status} ({reasons})")
    print(f"full log: {outcome.log}")
    _print_evidence(outcome.evidence)
    return EXIT_CODES.get(outcome.status, 1)


def _print_evidence(evidence: LocalEvidence | None) -> None:
    if evidence is None:
        print("no release evidence: the run ended before its analysis")
        return
    print(f"report: {evidence.report}")
    print(f"chart: {evidence.chart}")
    print(f"MLflow run: {evidence.run.url}")
