"""The ``drawbridge`` commands, one module per command group, named after it: ``drawbridge
keys ...`` is ``keys.py``. Each module attaches its group to ``gateway.cli.base.main`` when
imported (``base.COMMAND_MODULES``)."""
