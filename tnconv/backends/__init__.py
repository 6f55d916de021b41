"""Backends: what runs a plan (``tnconv.lower.plan``). A plan is plain data; a backend interprets it.

``tnconv.backends.torch`` is the first (and the one ``tnconv.compile`` uses): it
turns a plan into torch calls once, when a program is made, and builds the
structured constants per dtype and device.
"""
