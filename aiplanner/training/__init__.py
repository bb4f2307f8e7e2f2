"""Teaching the embedded model the game: situations, outcome labels, a LoRA adapter.

* :mod:`~aiplanner.training.situations`: seeded, varied situations as real esper worlds;
* :mod:`~aiplanner.training.teacher`: each rule candidate rolled out with the plugin's own
  processors and scored by outcome; the best is the label;
* :mod:`~aiplanner.training.dataset`: labels as the scored decision's prompts and phrases;
* :mod:`~aiplanner.training.lora`, :mod:`~aiplanner.training.evaluate`,
  :mod:`~aiplanner.training.train`: ``python -m aiplanner train`` (the ``train`` extra).
"""
