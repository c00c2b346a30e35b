"""``python -m pytest_advrobust.cli``: the ``advrobust`` command (also under ``torchrun``)."""

from . import console_main

console_main()
