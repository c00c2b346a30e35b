"""Settings: the ``robust`` marker, the ini keys and the command line -> frozen values.

:mod:`.robust` holds :class:`~.robust.RobustSettings` and the precedence rules,
:mod:`.marker` the marker's arguments and their checks, :mod:`.values` the words and
values the options accept, :mod:`.parsing` the value parsers shared with the
``advrobust`` command, :mod:`.cache_folder` where the cache lives. Nothing here
imports torch: the plugin reads these at load time.
"""
