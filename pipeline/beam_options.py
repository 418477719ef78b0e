"""Beam pipeline options shared by the stages and the demo."""

from __future__ import annotations

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
