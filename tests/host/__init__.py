"""Tests of qctl.host (a package, so its module names cannot clash with other test folders)."""
