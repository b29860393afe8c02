"""Compiled kernels, one backend per module with identical signatures.

``cpu``: Numba (always available).  ``gpu``: CuPy (optional extra ``gpu``).
Science code never imports these directly; it goes through
:func:`retina._backend.resolve`.
"""
