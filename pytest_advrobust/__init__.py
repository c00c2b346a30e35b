"""pytest-advrobust: adversarial robustness as a regression test for PyTorch models.

The flow of one robust test, and the module that holds each stage:

1. **plugin** (``plugin.py``: hooks only; ``session.py``, ``gate.py``, ``options.py``,
   ``adversarial_batch.py``): options, the ``robust`` marker, fixtures, the verdict after
   the test body.
2. **settings** (``settings.py``, ``marker.py``, ``option_types.py``, ``parsing.py``): marker,
   command line and ini -> one frozen settings object; the marker's arguments in one table;
   the option value parsers, built on the parsers shared with the ``advrobust`` command.
3. **data** (``data.py``, ``loading.py``, ``layout.py``): the user's data -> seeded,
   fixed evaluation and training tensors, converted once per session.
4. **attack** (``attacks/``): the protocol and registry, PGD/FGSM (``gradient.py``,
   ``pgd_core.py``), APGD (``apgd.py``), their shared losses and gradients (``steps.py``),
   the generator attack (``gan.py``, ``gan_fit.py``), query counts (``counting.py``); norm
   geometry and keep-the-worst in ``geometry.py``.
   - **gan** (``gan/``): generator networks, AdvGAN training, fitting to the evaluation inputs,
     generator keys and acquisition (memo, cache, warm start; one process or torchrun ranks).
   - **cache** (``cache/``): keys, the safe store, maintenance, and the one look-up-or-train
     protocol every cached network uses; weights only, checksummed.
   - **generated** (``generated/``): the class-conditional generator and the real vs
     generated gap.
5. **evaluate** (``evaluation.py`` with ``preparation.py``, ``model.py``, ``run_tools.py``,
   ``outcome.py``; ``metrics.py``, ``sanity/``, ``gatechecks.py``, ``precision.py``,
   ``gradcheck.py``): the model and data made ready and checked (the user's model borrowed
   and given back as it came), clean vs adversarial metrics, sanity flags.
6. **report** (``report.py``, ``tables.py``, ``jsonfiles.py``, ``baseline.py``,
   ``fingerprint.py``, ``markdown.py``, ``html_report.py``, ``pictures.py``, ``images.py``,
   ``image_cells.py``, ``history.py``): the terminal table (one renderer for every table),
   JSON and its one reader, JUnit, pictures, baselines, the CI job summary and the
   pytest-html rows.

``cli.py`` (the ``advrobust`` command; ``cli_cache.py``, ``cli_compare.py``, ``cli_warm.py``
hold its sub-commands), ``warm.py`` and ``distributed.py`` reuse the stages outside a pytest
run. Imports flow one way, down this list; ``tests/test_structure.py`` checks it.
"""

__version__ = "0.1.0"
