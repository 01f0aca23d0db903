"""probsig-jax: probability signatures and the embedding geometry of language models.

Subpackages and modules:
  data         data sets and the composite addition task generator
  signatures   probability signatures and their similarities
  models       Flax NNX models (linear embedding model)
  train        jit-compiled optax training loops
  theory       sympy-derived gradient-flow theory as JAX functions
  analysis     alignment metrics between embedding and signature similarity
  simulate     the command-line experiments (python -m probsig_jax.simulate)
"""

__version__ = "0.1.0"
