"""Package discovery, the one part of the build pyproject.toml cannot say.

Every package under ``bbox_lfm/`` is found, so a new one is never left out of the wheel; the
shipped profiles live in the top-level ``providers/`` folder and are added as
``bbox_lfm.providers`` (the mapping and the package data are in pyproject.toml).
"""

from setuptools import find_namespace_packages, setup

# namespace discovery also takes data folders (tasks/sample), which plain discovery warns about
setup(packages=[*find_namespace_packages(include=["bbox_lfm", "bbox_lfm.*"], exclude=["*.__pycache__"]),
                "bbox_lfm.providers"])
