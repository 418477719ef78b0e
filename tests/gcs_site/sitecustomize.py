"""Test-only: Beam's gcsio goes anonymous at once (on ``PYTHONPATH`` in gs:// tests).

Beam's gcsio asks ``google.auth.default()`` with retries and backoff (about 30 s per
process) before connecting anonymously, and no pipeline option skips that. Against the
loopback emulator there are no credentials to find, so every process that imports
``apache_beam.io.gcp.gcsio`` (stages, Beam workers, ``tfds build``) gets a
``create_storage_client`` that returns the anonymous client straight away. Beam itself
is imported only when a process imports it: this hook waits for that import.
"""

import importlib.abc
import importlib.util
import sys

_MODULE = "apache_beam.io.gcp.gcsio"


def _anonymous_client(pipeline_options=None, use_credentials=True):
    from google.cloud import storage

    return storage.Client.create_anonymous_client()


class _PatchGcsio(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != _MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            module.create_storage_client = _anonymous_client

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _PatchGcsio())
