"""The planner: concrete networks -> plans (plain data, ``tnconv.lower.plan``) that a backend runs.

Nothing here imports torch or a backend: ``tnconv.lower.plan.plan(net, target)``
plans a network for a backend's ``Target`` (its capabilities and fitted speeds,
``tnconv.lower.target``); programs (``tnconv.programs``) join a plan to the
backend that runs it.
"""
