"""train: the GHN training loop, image data, evaluation, ranking and warm-started fine-tuning."""

import archspace  # noqa: F401  (installs the filter for torch_geometric's import-time warning)
