"""Evaluation: one robust test, from its settings to its outcome.

:mod:`.run` evaluates a model (attacks, the worst case per sample, the eps sweep, the
sanity checks) into an :class:`~.outcome.Outcome`; :mod:`.store` keeps evaluations for
reuse under a key that digests the model's code (:mod:`.code_digest`) and
:data:`~.attack_version.ATTACK_VERSION`; :mod:`.warm` obtains generators outside an
evaluation; :mod:`.heartbeat` prints progress lines of long evaluations.
"""
