"""The version of what the plugin's attacks compute, for reusing stored evaluations.

An evaluation of an unchanged model, data and settings is read back from the cache
instead of being run again (:mod:`.store`); its key includes
:data:`ATTACK_VERSION`. **Bump it in any change that can alter an attack's output or
the numbers computed from it for the same inputs** (a new step rule, another
default, a fix in the worst-case merge, the GAN's training or fitting): every
stored evaluation then becomes stale and is computed again. A change that leaves
every result bit for bit the same (speed, messages) needs no bump. Torch-free.
"""

from __future__ import annotations

__all__ = ["ATTACK_VERSION"]

#: Bump when an attack's output (or a number derived from it) changes for the same inputs.
ATTACK_VERSION = 2
