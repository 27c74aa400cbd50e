"""Tests of qctl.qmp (a package, so its module names cannot clash with other test folders)."""
