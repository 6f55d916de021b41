"""Integrations of tnconv's routines into other libraries (each an optional extra: ``tnconv[opacus]``)."""
