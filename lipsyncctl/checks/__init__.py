"""The ``doctor`` job: what this machine has, and whether it can run a preset.

:func:`run_checks` (in :mod:`lipsyncctl.checks.doctor`) is the entry point.
"""

from lipsyncctl.checks.doctor import Check, DoctorResult, run_checks

__all__ = ["Check", "DoctorResult", "run_checks"]
