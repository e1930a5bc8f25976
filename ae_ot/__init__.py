"""ae-ot: generative modelling with semi-discrete optimal transport in an autoencoder's latent space.

``ae_ot.ot`` is a standalone OT library (torch and an optional fused C++ CPU kernel, no Lightning). The rest of the package holds
DataModules (:mod:`ae_ot.data`), networks (:mod:`ae_ot.nets`), the model zoo
(:mod:`ae_ot.generators`), evaluation (:mod:`ae_ot.evaluation`) and the ``ae-ot`` CLI.
"""

__version__ = "0.1.0"
