"""The model zoo: one LightningModule per generator, all sharing ``sample(n, seed)``."""

from ae_ot.generators.autoencoder import Autoencoder
from ae_ot.generators.base import GenerativeModel

__all__ = ["GenerativeModel", "Autoencoder"]
