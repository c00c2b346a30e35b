"""The generator prior of the ``gan`` attack: AdvGAN networks, their training, obtaining one.

:mod:`.config` holds the training settings, :mod:`.networks` (with :mod:`.blocks`,
:mod:`.discriminator`) the generator, :mod:`.train` (with :mod:`.training_run`,
:mod:`.steps`, :mod:`.holdout`) its training against the frozen model, :mod:`.keys` a
generator's key and family, :mod:`.acquire` obtaining one in one process and
:mod:`.acquire_ranks` under torchrun, whose collectives live in :mod:`.distributed`.
Importing this package imports nothing else.
"""
