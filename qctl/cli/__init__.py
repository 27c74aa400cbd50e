"""The ``qctl`` command. Uses only names exported by :mod:`qctl`."""
