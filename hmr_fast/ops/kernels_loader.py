"""Import `hmr_fast.kernels` (the repository's top-level kernels/ folder) in every setting."""

import importlib
import importlib.util
import pathlib
import sys


def kernels_package():
    """The ``hmr_fast.kernels`` package (setup.py maps it to the top-level kernels/ folder).

    In a source checkout that was not pip-installed the mapping does not exist yet, so the
    folder is loaded under that name by hand.
    """
    try:
        return importlib.import_module("hmr_fast.kernels")
    except ModuleNotFoundError:
        folder = pathlib.Path(__file__).resolve().parents[2] / "kernels"
        spec = importlib.util.spec_from_file_location(
            "hmr_fast.kernels", folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        if spec is None or not (folder / "__init__.py").exists():
            raise
        pkg = importlib.util.module_from_spec(spec)
        sys.modules["hmr_fast.kernels"] = pkg
        spec.loader.exec_module(pkg)
        return pkg
