"""The ``doctor`` job: what this machine has, and whether it can run a preset.

:func:`run_checks` is the entry point (:mod:`lipsyncctl.doctor.checks` holds the checks).
"""

from lipsyncctl.doctor.checks import Check, DoctorResult, run_checks

__all__ = ["Check", "DoctorResult", "run_checks"]
