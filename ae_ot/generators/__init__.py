"""The model zoo: one LightningModule per generator, all sharing ``sample(n, seed)``."""

from ae_ot.generators.ae_ot import AEOT
from ae_ot.generators.aeot_gan import AEOTGAN
from ae_ot.generators.autoencoder import Autoencoder
from ae_ot.generators.base import GenerativeModel
from ae_ot.generators.latent_flow import LatentFlowMatching
from ae_ot.generators.minibatch_wasserstein import MinibatchWassersteinGenerator
from ae_ot.generators.sinkhorn import SinkhornGenerator
from ae_ot.generators.wgan import WGAN, WGANGP

__all__ = ["GenerativeModel", "Autoencoder", "AEOT", "AEOTGAN", "WGAN", "WGANGP", "SinkhornGenerator",
           "MinibatchWassersteinGenerator", "LatentFlowMatching"]
