"""Metrics: clean vs adversarial numbers, their intervals, and the per-sample record.

:mod:`.accuracy` turns predictions into accuracies, losses and the gap,
:mod:`.intervals` gives their 95% intervals (torch-free), :mod:`.record` keeps which
samples were evaluated and each one's two verdicts.
"""
