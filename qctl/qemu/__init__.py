"""THE DRIVER: joins the layers below to run QEMU.

Planning (validate against caps, aliases, PCI placement), the pure command-line builder,
process start and stop, the monitor's vocabulary, hot-plug transactions, the per-domain
ledger and status file, reconciliation, and the :class:`~qctl.qemu.domain.Domain` handle.
The public names are re-exported by :mod:`qctl`.
"""
