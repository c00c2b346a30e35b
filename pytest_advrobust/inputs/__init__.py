"""Inputs: the user's model and data made ready for an evaluation, and checked.

:mod:`.data` turns the data fixture into seeded evaluation and training tensors
(:mod:`.loaders` reads DataLoaders in a seeded order, :mod:`.session_data` converts each
fixture value once per session, :mod:`.tensors` and :mod:`.labels` make tensors and class
indices, :mod:`.idx` reads IDX files); :mod:`.several` and :mod:`.rows` carry samples
with several inputs; :mod:`.model` borrows the user's model and gives it back as it
came, :mod:`.calls` guards every call of it, :mod:`.precision` keeps low-precision
inputs exact, :mod:`.gradcheck` checks that a gradient reaches the input, and
:mod:`.prepare` puts them together.
"""
