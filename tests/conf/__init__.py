"""Tests of the configuration model (qctl/conf/)."""
