"""The ``prep`` job: normalise clips for the model (constant frame rate, 16 kHz mono audio).

:func:`prep` is the entry point (:mod:`lipsyncctl.preparation.job` holds the job itself).
"""

from lipsyncctl.preparation.job import PrepItem, PrepResult, output_size, parse_scale, prep

__all__ = ["PrepItem", "PrepResult", "output_size", "parse_scale", "prep"]
