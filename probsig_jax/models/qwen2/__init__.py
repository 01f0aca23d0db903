"""Qwen2 / Qwen2.5 port (PAPER section 6): config, Flax NNX model, HF safetensors checkpoints.

One implementation covers the Qwen2, Llama and Mistral families (``Qwen2Config.model_type``: ``qwen2``,
``llama``, ``mistral``); ``load_pretrained`` reads any of them, ``save_pretrained`` writes the family back.

```python
from probsig_jax.models.qwen2 import PRESETS, Qwen2LM, load_pretrained, num_parameters
from flax import nnx
model = Qwen2LM(PRESETS["tiny"], rngs=nnx.Rngs(0))
logits_NxTxV = model(input_ids_NxT)
config, model = load_pretrained("path/to/Qwen2.5-0.5B")   # a local HF directory (or a Llama / Mistral one)
tokens_NxT2 = generate(model, prompt_NxT, max_new_tokens=20)  # greedy, KV cache
```
"""

from probsig_jax.models.qwen2.checkpoint import load_pretrained, save_pretrained
from probsig_jax.models.qwen2.config import PRESETS, Qwen2Config
from probsig_jax.models.qwen2.generate import generate
from probsig_jax.models.qwen2.model import Qwen2LM, abstract_model, num_parameters

__all__ = ["PRESETS", "Qwen2Config", "Qwen2LM", "abstract_model", "generate", "load_pretrained",
           "num_parameters", "save_pretrained"]
