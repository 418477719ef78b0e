"""Beam pipeline options shared by the stages and the demo."""

from __future__ import annotations

from typing import Any

#: Beam's DirectRunner first tries the Prism runner, which downloads a binary
#: from GitHub and falls back when it cannot. Naming the FnApiRunner (the
#: in-process engine behind DirectRunner) runs locally with no network attempt.
LOCAL_RUNNER = "apache_beam.runners.portability.fn_api_runner.fn_runner.FnApiRunner"


def local_options(workers: int = 1) -> str:
    """``--beam_pipeline_options`` for a local run on ``workers`` processes.

    One worker runs in process (fastest for small data: each extra worker
    process imports TensorFlow); more use ``direct_running_mode=multi_processing``.
    """
    if workers <= 1:
        return f"runner={LOCAL_RUNNER}"
    return (
        f"runner={LOCAL_RUNNER},direct_running_mode=multi_processing,direct_num_workers={workers}"
    )


def with_local_runner(args: list[str]) -> list[str]:
    """Beam args with the offline-safe local runner unless a runner was named."""
    if any(a == "--runner" or a.startswith("--runner=") for a in args):
        return args
    extra = [f"--runner={LOCAL_RUNNER}"]
    workers = [a for a in args if a.startswith("--direct_num_workers")]
    if workers and not any(a.startswith("--direct_running_mode") for a in args):
        extra.append("--direct_running_mode=multi_processing")
    return args + extra


def counters(result: Any, namespace: str) -> dict[str, int]:
    """Beam counters of ``namespace`` by name (committed, else attempted), summed over steps."""
    from apache_beam.metrics.metric import MetricsFilter

    totals: dict[str, int] = {}
    for counter in result.metrics().query(MetricsFilter().with_namespace(namespace))["counters"]:
        name = counter.key.metric.name
        totals[name] = totals.get(name, 0) + int(counter.committed or counter.attempted or 0)
    return totals
