"""Shim so Beam's ``--setup_file=./setup.py`` ships this package to Dataflow workers.

All metadata lives in pyproject.toml.
"""

from setuptools import setup

setup()
