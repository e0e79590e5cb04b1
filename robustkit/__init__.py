"""robustkit: adversarial robustness evaluation for classifiers of every kind.

Importing the package stays light; heavy optional modules (foolbox, dask,
matplotlib) are imported where they are used.
"""
from __future__ import annotations

__version__ = "0.1.0"

from robustkit.data import Dataset, DatasetInfo, load_dataset

__all__ = ["Dataset", "DatasetInfo", "__version__", "load_dataset"]
