"""The registered policies, one module per family. Every module here is imported (and so registers its
policies) with this package: adding a policy file needs no other change."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
