"""lipsyncctl: lip-sync dubbing from the command line (a re-implementation of LatentSync 1.5/1.6).

Importing the package is cheap: torch, diffusers and PyAV are imported lazily by the modules that
need them, so ``lipsyncctl --help`` starts in a fraction of a second.
"""

__version__ = "0.1.0"
