"""qctl's version: the one place it is written (the package metadata reads it from here).

A leaf module, so that the capabilities cache can key its entries on it without
``importlib.metadata``, whose import (the email package) costs a CLI command about 30 ms.
"""

__version__ = "0.1.0"
