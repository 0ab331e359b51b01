"""Import `hmr_fast.kernels` (the repository's top-level kernels/ folder) in every setting."""

import importlib
import importlib.util
import pathlib
import sys


def _source_tree_kernels() -> pathlib.Path | None:
    """The kernels/ folder beside this hmr_fast when it runs from a source tree, else None."""
    root = pathlib.Path(__file__).resolve().parents[2]
    folder = root / "kernels"
    if (root / "setup.py").is_file() and (folder / "__init__.py").is_file():
        return folder
    return None


def kernels_package():
    """The ``hmr_fast.kernels`` package (setup.py maps it to the top-level kernels/ folder).

    From a source tree, the kernels/ folder of *that* tree is loaded under the name, whether
    or not it was pip-installed: an editable install of another checkout in the same
    environment would otherwise pair this tree's launchers with that tree's kernels. A
    package already imported from another folder is an ImportError naming both.
    """
    folder = _source_tree_kernels()
    if folder is None:
        return importlib.import_module("hmr_fast.kernels")
    loaded = sys.modules.get("hmr_fast.kernels")
    if loaded is not None:
        where = pathlib.Path(getattr(loaded, "__file__", "") or "").resolve().parent
        if where != folder:
            raise ImportError(
                f"hmr_fast.kernels was imported from {where}, but this hmr_fast runs from "
                f"{folder.parent}: two checkouts share one environment"
            )
        return loaded
    spec = importlib.util.spec_from_file_location(
        "hmr_fast.kernels", folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    pkg = importlib.util.module_from_spec(spec)
    sys.modules["hmr_fast.kernels"] = pkg
    spec.loader.exec_module(pkg)
    importlib.import_module("hmr_fast").kernels = pkg  # as a normal import does
    return pkg
