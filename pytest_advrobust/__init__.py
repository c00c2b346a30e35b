"""pytest-advrobust: adversarial robustness as a regression test for PyTorch models.

One folder per stage, in the order a robust test flows through them; a module imports
only from its own stage and the ones above it in this list (``tests/test_structure.py``
checks it, and that no modules import each other in a loop):

- the ground, the modules at this level: ``errors`` (every exception), ``geometry`` (norm
  geometry and the keep-the-worst rule), ``runtime`` (what a run lends an evaluation: the
  cache folder, ``--advrobust-retrain``, progress lines, warnings) and ``attack_table``
  (every attack by name, with what it needs: a gradient, training data, the cache).
- ``settings/``: the ``robust`` marker, the ini keys and the command line -> frozen
  settings; torch-free.
- ``cache/``: keys, the safe store (weights only, checksummed, atomic, one lock per key),
  maintenance, and the one routine that obtains every cached network.
- ``inputs/``: the user's model and data made ready and checked: seeded splits, labels,
  several inputs per sample, the model borrowed and guarded, low precision.
- ``metrics/``: clean vs adversarial numbers, their intervals, the per-sample record.
- ``gan/``: the generator prior of the ``gan`` attack: networks, training (also under
  torchrun), keys, obtaining one.
- ``attacks/``: the attack protocol and registry, PGD, FGSM, APGD, the ``gan`` cascade.
- ``conditional/``: the class-conditional generator and the real vs generated gap of
  ``attack="generated"``.
- ``sanity/``: the checks for gradient masking and a broken evaluation.
- ``evaluation/``: one robust test: its settings read once into a plan, the attacks, the
  worst case per sample, the outcome, stored evaluations, generators outside a test.
- ``gate/``: the regression rule against the baseline and the checks no threshold can
  express; values in, sentences out.
- ``reports/``: the per-test report, tables, JSON, the baseline file, Markdown, pictures.
- ``cli/``: the ``advrobust`` command (``cache``, ``compare``, ``history``, ``warm``).
- ``plugin/``: pytest's hooks (this folder's ``__init__``), the session, the gate's
  verdict, options and fixtures. Only ``plugin/`` and ``cli/`` import pytest, and loading
  the plugin imports no torch.
"""

__version__ = "0.1.0"
