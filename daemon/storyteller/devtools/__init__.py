"""Developer tools, not for stories: synthetic llama2.c checkpoints and tokenizers
(checkpoints.py) and the float64 reference the engine is measured against (reference.py).
Imported by the tests, the scripts and `storyteller bench`; they need numpy."""
