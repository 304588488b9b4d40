__version__ = "0.1.0"

# TensorFlow's start-up chatter (absl, oneDNN, "no CUDA driver", cuInit) is held back from the first import of TensorFlow
# on, whichever module imports it; see `mlinfra_nb.workspace.quiet_tensorflow_imports` (nbs/00_workspace.ipynb).
from .workspace import quiet_tensorflow_imports as _quiet_tensorflow_imports
_quiet_tensorflow_imports()
