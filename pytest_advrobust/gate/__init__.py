"""The gate's rules: a test's evaluation against its baseline entry, and checks no threshold
can express.

:mod:`.comparison` is the regression rule (a fall beyond tolerance and noise), built on
:mod:`.paired` (the paired test of the same samples) and worded by
:mod:`.comparison_text`; :mod:`.checks` holds the clean-accuracy and stuck-baseline
checks; :mod:`.fingerprint` the environment a run's numbers depend on. They take values,
never the pytest session.
"""
